"""Items record when they last got a label a model learns from (item.labeled_at), so the
auto-retrain check counts only the labels newer than the newest model's training data
instead of every labeled item of the project on every answer.

Labels resolved before this revision take their item's updated_at.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRAINABLE_RESOLUTIONS = ("review", "consensus", "user_behavior")


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True))
    item = sa.table(
        "item",
        sa.column("labeled_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("resolved_by", sa.String(20)),
    )
    op.execute(
        item.update()
        .where(item.c.resolved_by.in_(TRAINABLE_RESOLUTIONS))
        .values(labeled_at=item.c.updated_at)
    )
    op.create_index("ix_item_project_labeled_at", "item", ["project_id", "labeled_at"])


def downgrade() -> None:
    op.drop_index("ix_item_project_labeled_at", table_name="item")
    with op.batch_alter_table("item") as batch:
        batch.drop_column("labeled_at")
