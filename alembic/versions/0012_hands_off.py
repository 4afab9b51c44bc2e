"""The hands-off loop: `project.hands_off` (its settings, NULL: off), `batch.ranked_by`
(whose stored scores ranked a label batch: the active version's, the previous one's while
the active version's pool scoring runs, or the active version's partial scores) and
`model_version.scoring_job_id` (the pool scoring its latest activation queued, which
batches ask about).

Revision ID: 0012_hands_off
Revises: 0011_webhooks
Create Date: 2026-12-06 19:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012_hands_off"
down_revision: str | None = "0011_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project") as batch_op:
        batch_op.add_column(sa.Column("hands_off", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("batch") as batch_op:
        batch_op.add_column(sa.Column("ranked_by", sa.String(length=30), nullable=True))
    with op.batch_alter_table("model_version") as batch_op:
        batch_op.add_column(sa.Column("scoring_job_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_model_version_scoring_job_id_job"), "job", ["scoring_job_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("model_version") as batch_op:
        batch_op.drop_constraint(op.f("fk_model_version_scoring_job_id_job"), type_="foreignkey")
        batch_op.drop_column("scoring_job_id")
    with op.batch_alter_table("batch") as batch_op:
        batch_op.drop_column("ranked_by")
    with op.batch_alter_table("project") as batch_op:
        batch_op.drop_column("hands_off")
