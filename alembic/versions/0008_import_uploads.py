"""Uploaded import files, stored in the database in chunks until their job ends.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_upload",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("n_chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_import_upload_project_id_project")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_import_upload_job_id_job")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_upload")),
    )
    op.create_table(
        "import_upload_chunk",
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["import_upload.id"],
            name=op.f("fk_import_upload_chunk_upload_id_import_upload"),
        ),
        sa.PrimaryKeyConstraint("upload_id", "seq", name=op.f("pk_import_upload_chunk")),
    )


def downgrade() -> None:
    op.drop_table("import_upload_chunk")
    op.drop_table("import_upload")
