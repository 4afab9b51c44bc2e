"""The unsettled pool: items no human has answered yet, which pool scoring
(app/tasks/scoring.py), prelabelling and production sampling work on."""

from typing import Any

from sqlalchemy import exists
from sqlmodel import col

from app.models.annotation import Annotation
from app.models.base import VOTE_SOURCES
from app.models.item import Item


def unsettled_condition() -> Any:
    """Items no human has answered yet (a model's auto-accept or an implicit label may have
    resolved them)."""
    human_answer = exists().where(
        col(Annotation.item_id) == col(Item.id),
        col(Annotation.is_current),
        col(Annotation.source).in_(VOTE_SOURCES),
    )
    return ~human_answer
