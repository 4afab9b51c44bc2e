"""Uploaded files, kept in the database (import_upload, import_upload_chunk) between the
request that takes one and the import job that reads it, so the API replica that took the
upload and the worker that reads it share nothing but the database. The chunks are deleted
when the job ends; an upload no job read to its end waits UPLOAD_RETENTION for a retry."""

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import IO

import sqlalchemy as sa
from sqlmodel import Session, col, or_, select

from app.db import Database
from app.errors import UploadGone
from app.models.base import utcnow
from app.models.imports import FileFormat, ImportUpload, ImportUploadChunk
from app.models.job import FINISHED, Job

UPLOAD_CHUNK_BYTES = 1024 * 1024
# Uploads whose job never read them to the end (cancelled while queued, interrupted) wait
# this long for a retry, then the next upload removes them.
UPLOAD_RETENTION = timedelta(days=1)
CHUNK_TABLE: sa.Table = ImportUploadChunk.__table__  # type: ignore[attr-defined]
UPLOAD_TABLE: sa.Table = ImportUpload.__table__  # type: ignore[attr-defined]


def store_upload(
    session: Session, *, project_id: int, file_name: str, file_format: FileFormat, file: IO[bytes]
) -> ImportUpload:
    """Store the file in chunks, as a new upload no job reads yet (flushes; the caller sets
    its job and commits). Removes stale uploads first."""
    _purge_stale_uploads(session)
    upload = ImportUpload(
        project_id=project_id,
        file_name=file_name,
        format=file_format,
        size_bytes=0,
        sha256="",
        n_chunks=0,
    )
    session.add(upload)
    session.flush()
    assert upload.id is not None
    digest = hashlib.sha256()
    file.seek(0)
    while data := file.read(UPLOAD_CHUNK_BYTES):
        session.execute(
            sa.insert(CHUNK_TABLE).values(upload_id=upload.id, seq=upload.n_chunks, data=data)
        )
        digest.update(data)
        upload.size_bytes += len(data)
        upload.n_chunks += 1
    upload.sha256 = digest.hexdigest()
    return upload


def _purge_stale_uploads(session: Session) -> None:
    """Remove uploads that no job will read: their job ended (or never existed) more than
    UPLOAD_RETENTION ago without reading them to the end (flushes)."""
    cutoff = utcnow() - UPLOAD_RETENTION
    stale = list(
        session.exec(
            select(ImportUpload.id)
            .outerjoin(Job, col(Job.id) == col(ImportUpload.job_id))
            .where(
                col(ImportUpload.created_at) < cutoff,
                or_(
                    col(Job.id).is_(None),
                    col(Job.status).in_(FINISHED) & (col(Job.finished_at) < cutoff),
                ),
            )
        )
    )
    for upload_id in stale:
        if upload_id is not None:
            _delete_upload_rows(session, upload_id)


def _delete_upload_rows(session: Session, upload_id: int) -> None:
    session.execute(sa.delete(CHUNK_TABLE).where(CHUNK_TABLE.c.upload_id == upload_id))
    session.execute(sa.delete(UPLOAD_TABLE).where(UPLOAD_TABLE.c.id == upload_id))


def _gone(upload_id: int) -> UploadGone:
    return UploadGone(
        f"The uploaded file of this import (upload {upload_id}) is no longer stored: its "
        "import already ran to its end, or it waited too long. Upload the file again."
    )


def claim_upload(database: Database, *, upload_id: int, job_id: int) -> ImportUpload:
    """The upload, now read by this job (a retry takes it over from the failed job)."""
    with database.session(write=True) as session:
        upload = session.get(ImportUpload, upload_id)
        if upload is None:
            raise _gone(upload_id)
        upload.job_id = job_id
        session.add(upload)
        session.commit()
        return upload


def upload_bytes(database: Database, upload: ImportUpload) -> Iterator[bytes]:
    """The upload's bytes, one stored chunk at a time, each in its own short read."""
    assert upload.id is not None
    for seq in range(upload.n_chunks):
        with database.session() as session:
            data = session.execute(
                sa.select(CHUNK_TABLE.c.data).where(
                    CHUNK_TABLE.c.upload_id == upload.id, CHUNK_TABLE.c.seq == seq
                )
            ).scalar()
        if data is None:
            raise _gone(upload.id)
        yield bytes(data)


def release_upload(database: Database, *, upload_id: int, job_id: int) -> None:
    """Delete the upload once its job has ended, unless a newer job has taken it over."""
    with database.session(write=True) as session:
        owner = session.execute(
            sa.select(UPLOAD_TABLE.c.job_id).where(UPLOAD_TABLE.c.id == upload_id)
        ).first()
        if owner is not None and owner[0] in (None, job_id):
            _delete_upload_rows(session, upload_id)
        session.commit()
