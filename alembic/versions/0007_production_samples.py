"""Continuous labeling: production predictions and the project's daily sampling setting.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A literal, not imported from the app: a migration must not change when the code does.
DEFAULT_SAMPLING = '{"daily_random": 20, "daily_low_confidence": 30, "low_confidence_below": 0.6}'


def upgrade() -> None:
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "production_sampling", sa.JSON(), nullable=False, server_default=DEFAULT_SAMPLING
            )
        )

    op.create_table(
        "production_prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sample_reason", sa.String(length=30), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_production_prediction_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_production_prediction_item_id_item")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_production_prediction")),
    )
    with op.batch_alter_table("production_prediction", schema=None) as batch_op:
        batch_op.create_index(
            "ix_production_prediction_project_received",
            ["project_id", "received_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_production_prediction_project_sampled",
            ["project_id", "sampled_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_production_prediction_item", ["item_id", "predicted_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("production_prediction", schema=None) as batch_op:
        batch_op.drop_index("ix_production_prediction_item")
        batch_op.drop_index("ix_production_prediction_project_sampled")
        batch_op.drop_index("ix_production_prediction_project_received")
    op.drop_table("production_prediction")
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_column("production_sampling")
