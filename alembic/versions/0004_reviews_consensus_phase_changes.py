"""Reviews, consensus policy and quality, and the recorded pilot-to-production phase changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "consensus_method",
                sa.String(length=20),
                nullable=False,
                server_default="majority",
            )
        )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consensus_quality", sa.Float(), nullable=True))

    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("previous_label", sa.String(length=100), nullable=True),
        sa.Column("previous_resolved_by", sa.String(length=20), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_review_project_id_project")
        ),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], name=op.f("fk_review_item_id_item")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review")),
    )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(
            "uq_review_current_item",
            ["item_id"],
            unique=True,
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        )
        batch_op.create_index("ix_review_project", ["project_id", "id"], unique=False)

    op.create_table(
        "phase_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("from_phase", sa.String(length=20), nullable=False),
        sa.Column("to_phase", sa.String(length=20), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("krippendorff_alpha", sa.Float(), nullable=True),
        sa.Column("agreement_threshold", sa.Float(), nullable=False),
        sa.Column("changed_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_phase_change_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phase_change")),
    )
    with op.batch_alter_table("phase_change", schema=None) as batch_op:
        batch_op.create_index("ix_phase_change_project", ["project_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("phase_change", schema=None) as batch_op:
        batch_op.drop_index("ix_phase_change_project")
    op.drop_table("phase_change")
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index("ix_review_project")
        batch_op.drop_index(
            "uq_review_current_item",
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        )
    op.drop_table("review")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_column("consensus_quality")
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_column("consensus_method")
