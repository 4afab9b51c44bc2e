"""Database failures that are not bugs: one classification for SQLite and PostgreSQL.

A connection lost to a failover, a server restarting, a lock held past the timeout, a full
disk: each is a fault of the database's surroundings, not of Labelwise. `classify` names the
fault behind an exception (or None: a bug, or a refusal of the request's own data);
`fault_error` turns it into the problem a client gets (docs/errors.md):

- connection_lost, cannot_connect, shutting_down, read_only, io_error: 503
  database-unavailable, with Retry-After;
- serialization_failure, deadlock, lock_timeout, pool_exhausted: 503 database-busy, with
  Retry-After;
- disk_full: 507 database-full.

`RETRYABLE_IN_PLACE` says which faults a request or a job may retry at once, before anything
committed: the retry gets a new connection or a new snapshot. A lock timeout is not among them:
the request has already waited the whole timeout.
"""

import sqlite3
from enum import StrEnum

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.errors import AppError, DatabaseBusy, DatabaseFull, DatabaseUnavailable


class DatabaseFault(StrEnum):
    connection_lost = "connection_lost"
    cannot_connect = "cannot_connect"
    shutting_down = "shutting_down"
    read_only = "read_only"
    io_error = "io_error"
    serialization_failure = "serialization_failure"
    deadlock = "deadlock"
    lock_timeout = "lock_timeout"
    pool_exhausted = "pool_exhausted"
    disk_full = "disk_full"


UNAVAILABLE = frozenset(
    {
        DatabaseFault.connection_lost,
        DatabaseFault.cannot_connect,
        DatabaseFault.shutting_down,
        DatabaseFault.read_only,
        DatabaseFault.io_error,
    }
)
BUSY = frozenset(
    {
        DatabaseFault.serialization_failure,
        DatabaseFault.deadlock,
        DatabaseFault.lock_timeout,
        DatabaseFault.pool_exhausted,
    }
)
RETRYABLE_IN_PLACE = frozenset(
    {
        DatabaseFault.connection_lost,
        DatabaseFault.cannot_connect,
        DatabaseFault.shutting_down,
        DatabaseFault.serialization_failure,
        DatabaseFault.deadlock,
    }
)

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_POSTGRES_STATES: dict[str, DatabaseFault] = {
    "57P01": DatabaseFault.shutting_down,  # admin_shutdown: pg_terminate_backend, fast stop
    "57P02": DatabaseFault.shutting_down,  # crash_shutdown
    "57P03": DatabaseFault.cannot_connect,  # cannot_connect_now: starting up, recovering
    "57P05": DatabaseFault.connection_lost,  # idle_session_timeout
    "25P03": DatabaseFault.connection_lost,  # idle_in_transaction_session_timeout
    "53300": DatabaseFault.cannot_connect,  # too_many_connections
    "40001": DatabaseFault.serialization_failure,
    "40P01": DatabaseFault.deadlock,
    "55P03": DatabaseFault.lock_timeout,  # lock_not_available (lock_timeout)
    "25006": DatabaseFault.read_only,  # read_only_sql_transaction: a standby after failover
    "53100": DatabaseFault.disk_full,
    "53000": DatabaseFault.disk_full,  # insufficient_resources
    "58030": DatabaseFault.io_error,
}

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
_SQLITE_CODES: dict[int, DatabaseFault] = {
    5: DatabaseFault.lock_timeout,  # SQLITE_BUSY, after the busy timeout
    6: DatabaseFault.lock_timeout,  # SQLITE_LOCKED
    8: DatabaseFault.read_only,  # SQLITE_READONLY
    10: DatabaseFault.io_error,  # SQLITE_IOERR
    13: DatabaseFault.disk_full,  # SQLITE_FULL
    14: DatabaseFault.cannot_connect,  # SQLITE_CANTOPEN
}
_SQLITE_MESSAGES: dict[str, DatabaseFault] = {
    "database is locked": DatabaseFault.lock_timeout,
    "database table is locked": DatabaseFault.lock_timeout,
    "database or disk is full": DatabaseFault.disk_full,
    "attempt to write a readonly database": DatabaseFault.read_only,
    "disk i/o error": DatabaseFault.io_error,
    "unable to open database file": DatabaseFault.cannot_connect,
}


def classify(error: BaseException) -> DatabaseFault | None:
    """The fault behind `error`, or None when it is not one (a bug, or a value the database
    refuses: those are the request's own)."""
    if isinstance(error, PoolTimeout):
        return DatabaseFault.pool_exhausted
    if isinstance(error, DBAPIError):
        fault = _driver_fault(error.orig)
        if fault is None and error.connection_invalidated:
            return DatabaseFault.connection_lost
        return fault
    # The driver's own error, raised where code uses the driver directly (COPY, procrastinate).
    return _driver_fault(error)


def _driver_fault(error: BaseException | None) -> DatabaseFault | None:
    if isinstance(error, sqlite3.Error):
        return _sqlite_fault(error)
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str) and state in _POSTGRES_STATES:
        return _POSTGRES_STATES[state]
    if isinstance(state, str) and state.startswith("08"):  # connection_exception class
        return DatabaseFault.connection_lost
    if _is_postgres_connection_error(error):
        message = str(error).lower()
        if "connection refused" in message or "connection failed" in message:
            return DatabaseFault.cannot_connect  # connecting, not a connection that was open
        return DatabaseFault.connection_lost
    return None


def _sqlite_fault(error: sqlite3.Error) -> DatabaseFault | None:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _SQLITE_CODES:
        return _SQLITE_CODES[code & 0xFF]
    message = str(error).lower()
    for start, fault in _SQLITE_MESSAGES.items():
        if message.startswith(start):
            return fault
    return None


def _is_postgres_connection_error(error: BaseException | None) -> bool:
    """psycopg's OperationalError without a SQLSTATE: the server is gone (refused, closed the
    socket, a timeout while connecting). A SQLSTATE-less error is never the query's fault."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(error, psycopg.OperationalError) and not getattr(error, "sqlstate", None)


def fault_error(error: BaseException) -> AppError | None:
    """The problem a client gets for a database fault; None if `error` is not one."""
    fault = classify(error)
    if fault is None:
        return None
    return error_for(fault)


_CAUSES: dict[DatabaseFault, str] = {
    DatabaseFault.connection_lost: "The connection to the database was lost",
    DatabaseFault.cannot_connect: "The database cannot be reached",
    DatabaseFault.shutting_down: "The database is shutting down or restarting",
    DatabaseFault.read_only: "The database is read-only (a standby, or a read-only file)",
    DatabaseFault.io_error: "The database's disk failed to read or write",
    DatabaseFault.lock_timeout: "Another writer held the database's lock past the timeout",
    DatabaseFault.pool_exhausted: "Every database connection stayed busy past the timeout",
    DatabaseFault.serialization_failure: "A concurrent transaction changed the same rows",
    DatabaseFault.deadlock: "A concurrent transaction deadlocked with this one",
    DatabaseFault.disk_full: "The database has no space left to write",
}


def cause(fault: DatabaseFault) -> str:
    """The fault in a few words, without what it meant for a request (a job says its own)."""
    return _CAUSES[fault]


def error_type(fault: DatabaseFault) -> type[AppError]:
    if fault == DatabaseFault.disk_full:
        return DatabaseFull
    return DatabaseBusy if fault in BUSY else DatabaseUnavailable


def error_for(fault: DatabaseFault, *, outcome_unknown: bool = False) -> AppError:
    """The problem a request gets for `fault`; `outcome_unknown` when its commit had begun."""
    context = {"fault": fault.value}
    if fault == DatabaseFault.disk_full:
        return DatabaseFull(
            f"{cause(fault)}; nothing of this request was stored. Reads still work. Writes "
            "resume once an operator frees space.",
            context=context,
        )
    return error_type(fault)(f"{cause(fault)}; {_rolled_back(outcome_unknown)}", context=context)


def _rolled_back(outcome_unknown: bool) -> str:
    if outcome_unknown:
        return (
            "the connection failed while committing, so whether this request's changes were "
            "stored is unknown. Retrying is safe where docs/hardening.md says so (or with the "
            "same Idempotency-Key)."
        )
    return "nothing of this request was stored. Retry after the Retry-After seconds."
