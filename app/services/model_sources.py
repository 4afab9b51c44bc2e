"""Which model a request means: the active registry version, another one named "registry:N",
or an external model named by the predictions posted for it. Prelabels and model-guided
batches both start here."""

from dataclasses import dataclass

from sqlmodel import Session, col, select

from app.errors import ErrorDetail, NoActiveModel, NoPredictions, ValidationFailed
from app.models.model_version import (
    ModelVersion,
    names_the_registry,
    registry_version_name,
    registry_version_number,
)
from app.models.prediction import Prediction
from app.models.project import Project
from app.services import model_versions


@dataclass
class ModelSource:
    """A model by the name its predictions carry, with the labels its probabilities follow."""

    name: str
    labels: list[str]
    version: ModelVersion | None  # None for an external model's stored predictions


def resolve_source(session: Session, *, project: Project, requested: str | None) -> ModelSource:
    """The model a request names (None: the active version). A registry version must exist
    (404), an external model must have stored predictions in this project (409)."""
    if requested is None:
        version = model_versions.active_version(session, project=project)
        if version is None:
            raise NoActiveModel(
                "This project has no active model: train one (POST .../models with "
                '"activate": true) or name an external model_version whose predictions you '
                "have posted."
            )
        return ModelSource(registry_version_name(version.version), version.labels, version)
    if names_the_registry(requested):
        number = registry_version_number(requested)
        if number is None:
            raise ValidationFailed(
                f"{requested!r} is not a registry version name (registry:<number>).",
                errors=[ErrorDetail(loc=["body", "model_version"], msg="bad registry name")],
            )
        version = model_versions.get_version(session, project=project, version=number)
        return ModelSource(requested, version.labels, version)
    stored = session.exec(
        select(Prediction.id)
        .where(col(Prediction.project_id) == project.id, col(Prediction.model_version) == requested)
        .limit(1)
    ).first()
    if stored is None:
        raise NoPredictions(
            f"No predictions are stored for model_version {requested!r} in this project; post "
            f"them to POST /v1/projects/{project.id}/predictions first, or name another "
            "model_version (leave it out for the active model)."
        )
    return ModelSource(requested, sorted(project.labels), None)
