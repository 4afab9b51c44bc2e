"""What a key may do and see beyond its route's role gate, in one place.

The routes decide which roles may call an operation at all (app/deps.py: AdminDep, WriterDep,
AnyRoleDep); these rules decide what a caller that got through may do inside it. The services
ask here instead of comparing roles themselves.
"""

from app.models.base import Role
from app.services.api_keys import Principal

ON_BEHALF_ROLES = frozenset({Role.admin, Role.service})


def may_act_for_others(principal: Principal) -> bool:
    """Admin and service keys act in any annotator's name: they submit annotations for others
    (imports) and set an annotation's source, fetch and use batches for others, and decide any
    item in review. An annotator key acts only as itself, and decides only the items its own
    review batch holds."""
    return principal.role in ON_BEHALF_ROLES


def may_act_as(principal: Principal, annotator: str | None) -> bool:
    """Whether a key may act in this annotator's name (None: its own): always as itself,
    as anyone else only if it may act for others."""
    return annotator is None or annotator == principal.name or may_act_for_others(principal)


def labels_blind(viewer: Principal) -> bool:
    """Annotator keys label blind, so their answers stay independent and agreement means
    something: they see only their own annotations and reviews, never how an item resolved
    (label, resolver, consensus quality) nor what it was before a review, no suggestion that
    would give the votes away, and they cannot filter items by resolved label. Admin and
    service keys see everything."""
    return viewer.role == Role.annotator
