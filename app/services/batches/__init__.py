"""Batches: choose what an annotator labels next and lease it, so no work is duplicated.

A request is chosen, then claimed, then written as leases:

- `pool`: who is asking and the eligibility predicate. The item is in the queue's status, the
  annotator has not answered it, holds it, or recently skipped it, and its human annotations
  plus live leases leave room under the project's `required_annotators` (review: nobody else
  holds it). Built once per queue and dialect, run with bound parameters.
- `choosing`: the candidates in preference order (started items, the strategy's picks among
  stored predictions or a cold start, a uniform exploration share; or the review queue).
- `claiming`: the first candidates still eligible, atomically (BEGIN IMMEDIATE on SQLite,
  FOR UPDATE SKIP LOCKED and a re-check on PostgreSQL).
- `use_cases`: create, read, renew, release and skip batches; close the leases of answered items.
- `responses`: a batch as its viewer sees it.

Import rule: outside this package, the use cases are imported from the package
(`from app.services import batches`, then `batches.create_batch`); they are all it exports.
Anything else (`Pool`, `eligibility`, `random_items`, the tuning constants) is imported from
the submodule that owns it, inside the package too, so a submodule never imports this
`__init__` and a name has one address.
"""

from app.services.batches.use_cases import (
    create_batch,
    get_batch,
    release_answered,
    release_batch,
    renew_batch,
    skip_items,
)

__all__ = [
    "create_batch",
    "get_batch",
    "release_answered",
    "release_batch",
    "renew_batch",
    "skip_items",
]
