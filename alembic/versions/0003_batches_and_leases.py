"""Batches and leases: active-learning assignment of items to annotators.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("annotator", sa.String(length=100), nullable=False),
        sa.Column("queue", sa.String(length=10), nullable=False),
        sa.Column("requested_strategy", sa.String(length=30), nullable=True),
        sa.Column("strategy", sa.String(length=30), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_batch_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch")),
    )
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batch_project_annotator", ["project_id", "annotator", "id"], unique=False
        )

    op.create_table(
        "lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("annotator", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("is_random", sa.Boolean(), nullable=False),
        sa.Column("predicted_label", sa.String(length=100), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batch.id"], name=op.f("fk_lease_batch_id_batch")),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], name=op.f("fk_lease_item_id_item")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_lease_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lease")),
    )
    with op.batch_alter_table("lease", schema=None) as batch_op:
        batch_op.create_index("ix_lease_annotator_item", ["annotator", "item_id"], unique=False)
        batch_op.create_index("ix_lease_batch", ["batch_id", "position"], unique=False)
        batch_op.create_index(
            "ix_lease_live_item",
            ["item_id", "expires_at"],
            unique=False,
            sqlite_where=sa.text("released_at IS NULL"),
            postgresql_where=sa.text("released_at IS NULL"),
        )
        batch_op.create_index(
            "ix_lease_project_exploration", ["project_id", "is_random", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("lease", schema=None) as batch_op:
        batch_op.drop_index("ix_lease_project_exploration")
        batch_op.drop_index(
            "ix_lease_live_item",
            sqlite_where=sa.text("released_at IS NULL"),
            postgresql_where=sa.text("released_at IS NULL"),
        )
        batch_op.drop_index("ix_lease_batch")
        batch_op.drop_index("ix_lease_annotator_item")

    op.drop_table("lease")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_project_annotator")

    op.drop_table("batch")
