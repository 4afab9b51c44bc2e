"""Retrying a runner's short transactions while the database is away (app/db_faults.py).

A claim, a job's end, a heartbeat with progress, failing a job whose process died: each is
one short transaction that is safe to run again, so a fault that may pass (a lost
connection, a restart, a held lock) is waited out with jittered backoff for a bounded time
(`LABELWISE_JOB_FAULT_RETRY_SECONDS`), then raised.
"""

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from app.db_faults import DatabaseFault, classify

logger = logging.getLogger("labelwise.jobs")

# The faults a runner waits out in its own bookkeeping: all of them, a full disk too (an
# operator may free space within the wait; a job's end is a few bytes). Past the wait a job
# left queued runs at its next enqueue, and a running one is swept.
WAITED_OUT = frozenset(DatabaseFault)
FIRST_WAIT_SECONDS = 0.1
MAX_WAIT_SECONDS = 5.0

Result = TypeVar("Result")


def retry_wait(attempt: int, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number `attempt`: 0.1 s doubling up to 5 s, +-50%."""
    base = min(FIRST_WAIT_SECONDS * 2.0 ** (attempt - 1), MAX_WAIT_SECONDS)
    jitter: float = (rng or random).uniform(0.5, 1.5)
    return base * jitter


def with_fault_retries(what: str, operation: Callable[[], Result], *, seconds: float) -> Result:
    """Run `operation` (one short transaction that is safe to run again), again after a
    database fault that may pass, with jittered backoff, for up to `seconds`; then raise the
    fault. A bug is raised at once."""
    deadline = time.monotonic() + seconds
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as error:  # a fault may be the driver's own error, unwrapped
            fault = classify(error)
            wait = retry_wait(attempt)
            if fault not in WAITED_OUT or time.monotonic() + wait > deadline:
                raise
            logger.warning(
                "%s: database fault %s (attempt %d); retrying in %.2f s",
                what,
                fault.value if fault else None,
                attempt,
                wait,
            )
        time.sleep(wait)
        attempt += 1
