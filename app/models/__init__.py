"""SQLModel tables and their Create/Update/Public schemas, one module per resource."""

from app.models.annotation import Annotation
from app.models.api_key import ApiKey
from app.models.base import SQLModel
from app.models.item import Item
from app.models.project import Project

__all__ = ["Annotation", "ApiKey", "Item", "Project", "SQLModel"]
