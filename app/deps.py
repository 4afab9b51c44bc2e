"""Annotated dependency aliases: the session, the calling principal, role gates, load-or-404."""

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.db import Database, read_apart
from app.errors import Forbidden, Unauthorized
from app.jobs.context import JobRunner
from app.models.base import MAX_DB_ID, Role, utcnow
from app.models.project import Project
from app.pagination import PageRequest, page_request
from app.services import project_loading
from app.services.api_keys import Principal, PrincipalCache, authenticate, hash_key
from app.settings import Settings

logger = logging.getLogger("labelwise.db")

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer lw_...`")


READ_METHODS = {"GET", "HEAD", "OPTIONS"}


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session. Opening one does no I/O, so it happens on the event loop; so
    does closing one with no transaction left (a write that committed), which is pure Python.
    Only a rollback goes to the thread pool: every thread hop costs a request ~0.2 ms.

    Closing never raises: it runs after the response was sent, and a rollback on a connection
    the database has dropped fails, harmlessly (the server rolled the transaction back)."""
    database: Database = request.app.state.database
    session = database.session(write=request.method not in READ_METHODS)
    try:
        yield session
    finally:
        try:
            if session.in_transaction():
                await run_in_threadpool(session.close)
            else:
                session.close()
        except SQLAlchemyError:
            logger.warning("closing a request's session failed", exc_info=True)


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.runner
    return runner


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_now() -> datetime:
    """The request's clock (UTC); tests override it to move through days without waiting."""
    return utcnow()


SessionDep = Annotated[Session, Depends(get_session)]
NowDep = Annotated[datetime, Depends(get_now)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The calling key: from this process's short-lived cache (`PrincipalCache`), else read
    from the database on the thread pool."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    cache: PrincipalCache = request.app.state.principals
    digest = hash_key(credentials.credentials)
    principal = cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_authenticate, session, credentials.credentials)
        cache.put(digest, principal)
    return principal


def _authenticate(session: Session, presented: str) -> Principal:
    with read_apart(session):  # a write request's lock waits for its route (app.db)
        return authenticate(session, presented=presented)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> object:
    allowed = set(roles)

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"This needs a key with role {names}; yours is {principal.role.value}.")
        return principal

    return Depends(check)


AdminDep = Annotated[Principal, require(Role.admin)]
WriterDep = Annotated[Principal, require(Role.admin, Role.service)]
AnyRoleDep = Annotated[Principal, require(Role.admin, Role.service, Role.annotator)]


ProjectIdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID)]


def load_project(session: SessionDep, project_id: ProjectIdPath) -> Project:
    with read_apart(session):  # a write request's lock waits for its route (app.db)
        return project_loading.load_project(session, project_id=project_id)


ProjectDep = Annotated[Project, Depends(load_project)]

LimitQuery = Annotated[
    int | None, Query(ge=1, description="Page size; default 100, clamped to the maximum (1000).")
]
CursorQuery = Annotated[
    str | None, Query(description="The next_cursor of the previous page, passed back unchanged.")
]


def get_page_request(
    settings: SettingsDep, limit: LimitQuery = None, cursor: CursorQuery = None
) -> PageRequest:
    return page_request(
        limit=limit,
        cursor=cursor,
        default=settings.default_page_size,
        maximum=settings.max_page_size,
    )


PageDep = Annotated[PageRequest, Depends(get_page_request)]
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_DB_ID)]
NameQuery = Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")]
