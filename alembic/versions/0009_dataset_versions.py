"""Dataset versions: immutable snapshots of the resolved labels (rows, and texts stored once
by SHA-256 per project), and the dataset version each model version was trained on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_text",
        sa.Column("project_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_dataset_text_project_id_project")
        ),
        sa.PrimaryKeyConstraint("project_id", "sha256", name=op.f("pk_dataset_text")),
    )
    op.create_table(
        "dataset_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("label_distribution", sa.JSON(), nullable=False),
        sa.Column("label_sources", sa.JSON(), nullable=False),
        sa.Column("item_sources", sa.JSON(), nullable=False),
        sa.Column("synthetic_share", sa.Float(), nullable=False),
        sa.Column("test_share", sa.Float(), nullable=False),
        sa.Column("split_counts", sa.JSON(), nullable=False),
        sa.Column("auto_accept_models", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_dataset_version_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_version")),
        sa.UniqueConstraint("project_id", "version", name="uq_dataset_version_project_id_version"),
    )
    op.create_table(
        "dataset_row",
        sa.Column("dataset_version_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("label_source", sa.String(length=20), nullable=False),
        sa.Column("item_source", sa.String(length=20), nullable=False),
        sa.Column("n_annotators", sa.Integer(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("split", sa.String(length=5), nullable=False),
        sa.Column("split_hash", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_version.id"],
            name=op.f("fk_dataset_row_dataset_version_id_dataset_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_version_id", "item_id", name=op.f("pk_dataset_row")),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_version", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_model_version_dataset_version",
            "dataset_version",
            ["project_id", "dataset_version"],
            ["project_id", "version"],
        )


def downgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_constraint("fk_model_version_dataset_version", type_="foreignkey")
        batch_op.drop_column("dataset_version")

    op.drop_table("dataset_row")
    op.drop_table("dataset_version")
    op.drop_table("dataset_text")
