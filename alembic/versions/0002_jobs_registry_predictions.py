"""Jobs, the model registry (versions, artifacts), predictions, and prelabel fields.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 23:44:26.302386
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_job_project_id_project")
        ),
        sa.ForeignKeyConstraint(["retry_of"], ["job.id"], name=op.f("fk_job_retry_of_job")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index("ix_job_project_id", ["project_id", "id"], unique=False)
        batch_op.create_index("ix_job_status", ["status", "id"], unique=False)

    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=50), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("train_item_ids", sa.JSON(), nullable=False),
        sa.Column("train_labels", sa.JSON(), nullable=False),
        sa.Column("train_set_hash", sa.String(length=64), nullable=False),
        sa.Column("label_distribution", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("training_seconds", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_model_version_job_id_job")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_model_version_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("project_id", "version", name="uq_model_version_project_id_version"),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.create_index(
            "uq_model_version_active_project",
            ["project_id"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.create_table(
        "prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("entropy", sa.Float(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], name=op.f("fk_prediction_item_id_item")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_prediction_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction")),
        sa.UniqueConstraint("item_id", "model_version", name="uq_prediction_item_id_model_version"),
    )
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.create_index(
            "ix_prediction_version_confidence",
            ["project_id", "model_version", "confidence"],
            unique=False,
        )
        batch_op.create_index(
            "ix_prediction_version_entropy",
            ["project_id", "model_version", "entropy"],
            unique=False,
        )
        batch_op.create_index(
            "ix_prediction_version_margin", ["project_id", "model_version", "margin"], unique=False
        )

    op.create_table(
        "model_artifact",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=30), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_model_artifact_model_version_id_model_version"),
        ),
        sa.PrimaryKeyConstraint("model_version_id", "name", name=op.f("pk_model_artifact")),
    )
    with op.batch_alter_table("annotation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("threshold", sa.Float(), nullable=True))

    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retrain_after_labels", sa.Integer(), nullable=True))

    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("review_reason", sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column("suggested_label", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("suggestion_confidence", sa.Float(), nullable=True))
        batch_op.create_index(
            "ix_item_project_resolved_by", ["project_id", "resolved_by", "id"], unique=False
        )
    # Before this revision every resolved label came from human answers.
    op.execute("UPDATE item SET resolved_by = 'consensus' WHERE resolved_label IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_column("retrain_after_labels")

    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index("ix_item_project_resolved_by")
        batch_op.drop_column("suggestion_confidence")
        batch_op.drop_column("suggested_label")
        batch_op.drop_column("review_reason")
        batch_op.drop_column("resolved_by")

    with op.batch_alter_table("annotation", schema=None) as batch_op:
        batch_op.drop_column("threshold")
        batch_op.drop_column("confidence")

    op.drop_table("model_artifact")
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_version_margin")
        batch_op.drop_index("ix_prediction_version_entropy")
        batch_op.drop_index("ix_prediction_version_confidence")

    op.drop_table("prediction")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_model_version_active_project",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.drop_table("model_version")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_status")
        batch_op.drop_index("ix_job_project_id")

    op.drop_table("job")
