"""Create, read and change projects, keeping labels and item statuses consistent."""

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.errors import AgreementBelowThreshold, Conflict, ErrorDetail, ValidationFailed
from app.jobs.context import JobRunner
from app.models.annotation import Annotation
from app.models.base import ConsensusMethod, Phase, utcnow
from app.models.item import Item
from app.models.project import PhaseChange, Project, ProjectCreate, ProjectUpdate
from app.models.webhook import EventType, ProjectPhaseChangedData
from app.pagination import PageRequest, keyset
from app.services import agreement, consensus, events, item_status
from app.services.api_keys import Principal


def create_project(session: Session, *, data: ProjectCreate) -> Project:
    project = Project.model_validate(data.model_dump(mode="json"))
    session.add(project)
    _write_or_conflict(session, name=project.name)
    return project


def list_projects(session: Session, *, page: PageRequest) -> list[Project]:
    return list(session.exec(keyset(select(Project), col(Project.id), page)))


def update_project(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    data: ProjectUpdate,
    principal: Principal,
) -> Project:
    changes = data.model_dump(mode="json", exclude_unset=True)
    assert project.id is not None
    force, reason = changes.pop("force", False), changes.pop("reason", None)
    if "production_sampling" in changes:  # a partial object: the fields sent change
        changes["production_sampling"] = {
            **project.production_sampling,
            **changes["production_sampling"],
        }
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
        raise Conflict(
            f"The new labels leave out {unknown}, which the project's examples still use; send "
            "examples with the new labels in the same request (or an empty list of examples)."
        )
    if changes.get("consensus_method", project.consensus_method) != project.consensus_method:
        consensus.check_method(
            session, project=project, method=ConsensusMethod(changes["consensus_method"])
        )
    phase_change = _phase_change(
        session, project=project, changes=changes, force=force, reason=reason, by=principal
    )
    required_before, method_before = project.required_annotators, project.consensus_method
    for field, value in changes.items():
        setattr(project, field, value)
    project.updated_at = utcnow()
    session.add(project)
    if phase_change is not None:
        session.add(phase_change)
    # A rename onto another project's name fails here, before the commit: a 409 too.
    _write_or_conflict(session, name=project.name, commit=False)
    if phase_change is not None:
        _emit_phase_changed(session, phase_change)
    job = None
    if (required_before, method_before) != (project.required_annotators, project.consensus_method):
        item_status.refresh_project(session, project=project)
        job = consensus.queue_apply(session, project=project, created_by=principal.name)
    _write_or_conflict(session, name=project.name)
    if job is not None and job.id is not None:
        runner.enqueue(job.id)
    return project


def _phase_change(
    session: Session,
    *,
    project: Project,
    changes: dict[str, object],
    force: bool,
    reason: str | None,
    by: Principal,
) -> PhaseChange | None:
    """The record of a phase change; leaving the pilot below the agreement threshold is
    refused unless forced with a reason, which is recorded with the measured alpha."""
    new_phase = changes.get("phase", project.phase)
    if new_phase == project.phase:
        return None
    alpha, pairable = agreement.measured_alpha(session, project=project)
    # The stored threshold: lowering it in the same request does not open the gate.
    threshold = project.agreement_threshold
    leaving_pilot = project.phase == Phase.pilot and new_phase == Phase.production
    below = alpha is None or alpha < threshold
    if leaving_pilot and below and not force:
        measured = (
            "cannot be measured yet"
            if alpha is None
            else f"is {agreement.said(alpha, beside=threshold)}"
        )
        raise AgreementBelowThreshold(
            f"Agreement {measured} (Krippendorff's alpha over {pairable} items with two or more "
            f"labels), below the agreement threshold {threshold:g}: the pilot is not done. "
            "See GET .../agreement for the likely causes, or send force: true with a reason.",
            context={
                "krippendorff_alpha": alpha,
                "agreement_threshold": threshold,
                "n_pairable_items": pairable,
            },
        )
    assert project.id is not None
    return PhaseChange(
        project_id=project.id,
        from_phase=project.phase,
        to_phase=str(new_phase),
        forced=bool(leaving_pilot and below and force),
        reason=reason,
        krippendorff_alpha=alpha,
        agreement_threshold=threshold,
        changed_by=by.name,
    )


def _emit_phase_changed(session: Session, change: PhaseChange) -> None:
    events.emit(
        session,
        EventType.project_phase_changed,
        project_id=change.project_id,
        data=lambda: ProjectPhaseChangedData(
            project_id=change.project_id,
            from_phase=Phase(change.from_phase),
            to_phase=Phase(change.to_phase),
            forced=change.forced,
            reason=change.reason,
            krippendorff_alpha=change.krippendorff_alpha,
            agreement_threshold=change.agreement_threshold,
            changed_by=change.changed_by,
            changed_at=change.created_at,
        ),
    )


def list_phase_changes(
    session: Session, *, project_id: int, page: PageRequest
) -> list[PhaseChange]:
    query = select(PhaseChange).where(col(PhaseChange.project_id) == project_id)
    return list(session.exec(keyset(query, col(PhaseChange.id), page)))


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


def _write_or_conflict(session: Session, *, name: str, commit: bool = True) -> None:
    """Commit (or only flush) the project; a duplicate name is a 409, not a database error."""
    try:
        if commit:
            session.commit()
        else:
            session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A project named {name!r} already exists.") from None
