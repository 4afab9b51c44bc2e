"""SQLModel tables and their Create/Update/Public schemas, one module per resource."""

from sqlmodel import SQLModel

import app.models.base  # noqa: F401  (sets the constraint naming convention first)
from app.models.annotation import Annotation
from app.models.api_key import ApiKey
from app.models.item import Item
from app.models.project import Project

__all__ = ["Annotation", "ApiKey", "Item", "Project", "SQLModel"]
