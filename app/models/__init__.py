"""SQLModel tables and their Create/Update/Public schemas, one module per resource."""

from sqlmodel import SQLModel

import app.models.base  # noqa: F401  (sets the constraint naming convention first)
from app.models.annotation import Annotation
from app.models.api_key import ApiKey
from app.models.batch import Batch, Lease
from app.models.dataset_version import DatasetRow, DatasetText, DatasetVersion
from app.models.idempotency import IdempotentRequest
from app.models.imports import ImportUpload, ImportUploadChunk
from app.models.item import Item
from app.models.job import Job
from app.models.label_issue import LabelIssueReport, LabelIssueRow
from app.models.model_version import ModelArtifact, ModelVersion
from app.models.prediction import Prediction
from app.models.production import ProductionPrediction
from app.models.project import PhaseChange, Project
from app.models.review import Review
from app.models.webhook import Webhook, WebhookDelivery, WebhookEvent

__all__ = [
    "Annotation",
    "ApiKey",
    "Batch",
    "DatasetRow",
    "DatasetText",
    "DatasetVersion",
    "IdempotentRequest",
    "ImportUpload",
    "ImportUploadChunk",
    "Item",
    "Job",
    "LabelIssueReport",
    "LabelIssueRow",
    "Lease",
    "ModelArtifact",
    "ModelVersion",
    "PhaseChange",
    "Prediction",
    "ProductionPrediction",
    "Project",
    "Review",
    "SQLModel",
    "Webhook",
    "WebhookDelivery",
    "WebhookEvent",
]
