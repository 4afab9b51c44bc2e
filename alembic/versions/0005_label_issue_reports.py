"""Label-issue reports and their issue rows; a review priority on items.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_priority", sa.Float(), nullable=True))

    op.create_table(
        "label_issue_report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("previous_report_id", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("library_versions", sa.JSON(), nullable=False),
        sa.Column("probabilities_source", sa.String(length=50), nullable=False),
        sa.Column("snapshot_hash", sa.String(length=64), nullable=False),
        sa.Column("snapshot_labels", sa.JSON(), nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("n_issues", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("comparison", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_label_issue_report_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_label_issue_report_job_id_job")
        ),
        sa.ForeignKeyConstraint(
            ["previous_report_id"],
            ["label_issue_report.id"],
            name=op.f("fk_label_issue_report_previous_report_id_label_issue_report"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_issue_report")),
    )
    with op.batch_alter_table("label_issue_report", schema=None) as batch_op:
        batch_op.create_index("ix_label_issue_report_project", ["project_id", "id"], unique=False)

    op.create_table(
        "label_issue_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("given_label", sa.String(length=100), nullable=False),
        sa.Column("suggested_label", sa.String(length=100), nullable=False),
        sa.Column("label_quality", sa.Float(), nullable=False),
        sa.Column("suggestion_confidence", sa.Float(), nullable=False),
        sa.Column("is_issue", sa.Boolean(), nullable=False),
        sa.Column("is_label_issue", sa.Boolean(), nullable=False),
        sa.Column("is_near_duplicate", sa.Boolean(), nullable=False),
        sa.Column("is_outlier", sa.Boolean(), nullable=False),
        sa.Column("change", sa.String(length=12), nullable=True),
        sa.Column("sent_to_review", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["label_issue_report.id"],
            name=op.f("fk_label_issue_item_report_id_label_issue_report"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_label_issue_item_item_id_item")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_issue_item")),
    )
    with op.batch_alter_table("label_issue_item", schema=None) as batch_op:
        batch_op.create_index("ix_label_issue_item_rank", ["report_id", "rank"], unique=True)
        batch_op.create_index("ix_label_issue_item_item", ["item_id", "report_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("label_issue_item", schema=None) as batch_op:
        batch_op.drop_index("ix_label_issue_item_item")
        batch_op.drop_index("ix_label_issue_item_rank")
    op.drop_table("label_issue_item")
    with op.batch_alter_table("label_issue_report", schema=None) as batch_op:
        batch_op.drop_index("ix_label_issue_report_project")
    op.drop_table("label_issue_report")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_column("review_priority")
