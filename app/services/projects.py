"""Create, read and change projects, keeping labels and item statuses consistent."""

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.errors import Conflict, ErrorDetail, NotFound, ValidationFailed
from app.models.annotation import Annotation
from app.models.base import utcnow
from app.models.item import Item
from app.models.project import Project, ProjectCreate, ProjectUpdate
from app.pagination import PageRequest, keyset
from app.services import item_status


def create_project(session: Session, *, data: ProjectCreate) -> Project:
    project = Project.model_validate(data.model_dump(mode="json"))
    session.add(project)
    _commit_or_conflict(session, name=project.name)
    return project


def get_project(session: Session, *, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"No project with id {project_id}.")
    return project


def list_projects(session: Session, *, page: PageRequest) -> list[Project]:
    return list(session.exec(keyset(select(Project), col(Project.id), page)))


def update_project(session: Session, *, project: Project, data: ProjectUpdate) -> Project:
    changes = data.model_dump(mode="json", exclude_unset=True)
    assert project.id is not None
    force, reason = changes.pop("force", False), changes.pop("reason", None)
    del force, reason  # recorded by the pilot-to-production gate (agreement work)
    labels = changes.get("labels", project.labels)
    if "labels" in changes:
        _refuse_removing_used_labels(session, project=project, new_labels=labels)
    unknown = sorted({e["label"] for e in changes.get("examples", project.examples)} - set(labels))
    if unknown and "examples" in changes:
        raise ValidationFailed(
            f"Examples use labels that are not the project's: {unknown}.",
            errors=[ErrorDetail(loc=["body", "examples"], msg=f"unknown labels {unknown}")],
        )
    if unknown:
        raise Conflict(f"Examples still use {unknown}; send new examples with the new labels.")
    for field, value in changes.items():
        setattr(project, field, value)
    project.updated_at = utcnow()
    session.add(project)
    if "annotators_per_item" in changes:
        session.flush()
        item_status.refresh_project(session, project=project)
    _commit_or_conflict(session, name=project.name)
    return project


def _refuse_removing_used_labels(
    session: Session, *, project: Project, new_labels: list[str]
) -> None:
    removed = set(project.labels) - set(new_labels)
    if not removed:
        return
    found: set[str | None] = set(
        session.exec(
            select(Annotation.label)
            .where(
                col(Annotation.project_id) == project.id,
                col(Annotation.is_current),
                col(Annotation.label).in_(removed),
            )
            .distinct()
        )
    )
    found |= set(
        session.exec(
            select(Item.resolved_label)
            .where(col(Item.project_id) == project.id, col(Item.resolved_label).in_(removed))
            .distinct()
        )
    )
    in_use = {label for label in found if label is not None}
    if in_use:
        raise Conflict(
            f"Labels {sorted(in_use)} are used by current annotations and cannot be removed; "
            "relabel those items first."
        )


def _commit_or_conflict(session: Session, *, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A project named {name!r} already exists.") from None
