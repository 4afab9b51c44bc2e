"""Migration 0002 marks labels resolved before it as human consensus, so they train models."""

from pathlib import Path

import sqlalchemy as sa

from app.migrations import upgrade
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
