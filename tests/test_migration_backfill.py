"""Migration 0002 marks labels resolved before it as human consensus, so they train models."""

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from app.migrations import downgrade, upgrade
from tests.databases import fresh_database


def test_resolved_labels_from_before_0002_count_as_consensus(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        upgrade(url, "0001")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO project (name, labels, allow_abstain, guidelines, examples,"
                " annotators_per_item, auto_accept_threshold, agreement_threshold,"
                " synthetic_max_ratio, cost_per_label, phase, created_at, updated_at)"
                " VALUES ('p', '[\"a\", \"b\"]', true, '', '[]', 1, 0.95, 0.6, 0.1, '{}',"
                " 'pilot', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
            for n, label in enumerate(("a", None)):
                connection.execute(
                    sa.text(
                        "INSERT INTO item (project_id, text, content_hash, data, metadata,"
                        " source, status, resolved_label, created_at, updated_at)"
                        " VALUES (1, :text, :hash, '{}', '{}', 'manual', :status, :label,"
                        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {
                        "text": f"t{n}",
                        "hash": f"h{n}",
                        "status": "labeled" if label else "unlabeled",
                        "label": label,
                    },
                )
        upgrade(url)
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT resolved_label, resolved_by FROM item ORDER BY id"
            ).all()
        engine.dispose()
    assert [tuple(r) for r in rows] == [("a", "consensus"), (None, None)]


def _row(table: sa.Table, **given: object) -> dict[str, object]:
    """The given values, and a placeholder for every other required column."""
    placeholders: list[tuple[type, object]] = [
        (sa.Boolean, False),
        (sa.Integer, 1),
        (sa.Float, 0.5),
        (sa.DateTime, datetime(2026, 1, 1, tzinfo=UTC)),
        (sa.JSON, {}),
        (sa.LargeBinary, b"x"),
    ]
    row = dict(given)
    for column in table.columns:
        if column.name in row or column.nullable or column.primary_key:
            continue
        row[column.name] = next(
            (value for kind, value in placeholders if isinstance(column.type, kind)), "x"
        )
    return row


def test_0009_rebuilds_model_version_without_losing_rows_others_reference(
    backend: str, tmp_path: Path
) -> None:
    """SQLite rebuilds a table to add a foreign key; with foreign keys on, dropping the old
    model_version failed on the artifacts that reference it (env.py turns them off)."""
    with fresh_database(backend, tmp_path) as url:
        upgrade(url, "0008")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            metadata = sa.MetaData()
            for name, values in (
                ("project", {"id": 1, "name": "p", "labels": ["a", "b"]}),
                ("model_version", {"id": 1, "project_id": 1, "version": 1, "active": True}),
                ("model_artifact", {"model_version_id": 1, "name": "pipeline"}),
            ):
                table = sa.Table(name, metadata, autoload_with=connection)
                connection.execute(table.insert(), _row(table, **values))
        upgrade(url)
        downgrade(url, "0008")
        upgrade(url)
        with engine.connect() as connection:
            counts = [
                connection.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one()
                for name in ("model_version", "model_artifact")
            ]
            active = connection.exec_driver_sql("SELECT active FROM model_version").scalar_one()
        engine.dispose()
    assert counts == [1, 1] and bool(active)


def test_0010_stamps_labels_a_model_learns_from_with_their_items_update_time(
    backend: str, tmp_path: Path
) -> None:
    """Auto-retrain counts items labeled after the newest training data: labels from before
    0010 take their item's updated_at; items without a trainable label stay unstamped."""
    updated = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    with fresh_database(backend, tmp_path) as url:
        upgrade(url, "0009")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            metadata = sa.MetaData()
            project = sa.Table("project", metadata, autoload_with=connection)
            connection.execute(project.insert(), _row(project, id=1, name="p", labels=["a"]))
            item = sa.Table("item", metadata, autoload_with=connection)
            for n, by in enumerate(("consensus", "review", "user_behavior", "model", None)):
                values = _row(item, project_id=1, text=f"t{n}", content_hash=f"h{n}")
                connection.execute(
                    item.insert(), {**values, "resolved_by": by, "updated_at": updated}
                )
        upgrade(url)
        with engine.connect() as connection:
            stamped = connection.exec_driver_sql(
                "SELECT resolved_by, labeled_at FROM item ORDER BY id"
            ).all()
        downgrade(url, "0009")
        engine.dispose()
    assert [by for by, at in stamped if at is not None] == ["consensus", "review", "user_behavior"]
    assert {str(at)[:19] for _, at in stamped if at is not None} == {"2026-03-04 05:06:07"}
