"""Synthetic items: an LLM behind an OpenAI-compatible endpoint configured on the server writes
texts for one label; they are validated, deduplicated, capped at the project's
synthetic_max_ratio and stored as items with `source: "synthetic"` and their provenance.

The intended label is kept in `metadata.synthetic.label` only, not as an annotation: every
annotation source means "someone decided this label" (a human, a model's auto-accept, an
import), and an LLM's intent is none of these. A synthetic item becomes training data once a
human labels it, which is also the check that the LLM wrote what it was asked for.

The LLM call itself (the openai client, retries with backoff) is app.sources.llm; this module
retries malformed answers a bounded number of times.
"""

import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, func, select

from app.errors import Conflict, ErrorDetail, NotReady, ValidationFailed
from app.jobs.context import JobContext, JobRunner
from app.models.base import HUMAN_RESOLUTIONS, ItemSource
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.project import Project
from app.models.synthetic import SyntheticRequest
from app.services import jobs
from app.services.api_keys import Principal
from app.services.items import content_hash, ingest_items
from app.services.project_loading import load_project
from app.settings import Settings
from app.sources.llm import LLMRefused, LLMUnavailable, Messages, Sleeper, complete, make_client

if TYPE_CHECKING:
    import openai

DEFAULT_TEMPERATURE = 0.9
MAX_EXAMPLES = 5  # examples of the target label shown in the prompt
MAX_EXAMPLE_CHARS = 500  # each one cut to this length
MAX_GUIDELINE_CHARS = 8_000
MAX_PER_CALL = 50  # texts asked for in one completion
MAX_CALLS = 100  # hard bound on completions per job, whatever the answers
IN_CLAUSE_CHUNK = 1_000


class LLMNotConfigured(NotReady):
    slug = "llm-not-configured"


def is_configured(settings: Settings) -> bool:
    return bool(settings.llm_base_url and settings.llm_model)


def _require_configured(settings: Settings) -> None:
    if not is_configured(settings):
        raise LLMNotConfigured(
            "Synthetic generation needs an OpenAI-compatible LLM endpoint configured on the "
            "server: set LABELWISE_LLM_BASE_URL and LABELWISE_LLM_MODEL (and "
            "LABELWISE_LLM_API_KEY if the endpoint needs one). Nothing was queued."
        )


def start_generation(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: SyntheticRequest,
    settings: Settings,
) -> Job:
    """Queue a generation job. No endpoint configured is a 503, an unknown label a 422, a
    generation already on its way a 409: one at a time per project keeps the cap exact."""
    _require_configured(settings)
    if request.label not in project.labels:
        raise ValidationFailed(
            f"label: {request.label!r} is not a label of this project "
            f"({', '.join(project.labels)}).",
            errors=[ErrorDetail(loc=["body", "label"], msg="not a label of this project")],
        )
    pending = session.exec(
        select(Job.id).where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.synthetic,
            col(Job.status).in_(("queued", "running")),
        )
    ).first()
    if pending is not None:
        raise Conflict(
            f"A synthetic generation is already on its way for this project (job {pending}); "
            "wait for it (GET /v1/jobs/{id}) or cancel it first.",
            slug="synthetic-in-progress",
        )
    temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.synthetic,
        params={
            "label": request.label,
            "count": request.count,
            "instructions": request.instructions,
            "temperature": temperature,
        },
        created_by=principal.name,
    )


# --- pure parts: cap, prompt, parsing, validation, backoff ----------------------------------------


def allowed_synthetic(
    *, ratio: float, human_labeled: int, existing_synthetic: int, requested: int
) -> int:
    """How many synthetic items may still be added: the same formula as the training set's
    cap (app.services.model_versions.build_training_set), counting every synthetic item of the
    project, labeled or not. A ratio of 1 means no cap."""
    if ratio >= 1:
        return requested
    return max(0, math.floor(ratio * human_labeled / (1 - ratio)) - existing_synthetic)


def build_prompt(
    *,
    guidelines: str,
    labels: Sequence[str],
    label: str,
    examples: Sequence[str],
    instructions: str | None,
    count: int,
) -> Messages:
    """The chat messages asking for `count` texts of `label`, as a JSON array only."""
    system = (
        "You write realistic example inputs for a data-labeling project. Answer with a JSON "
        "array of strings and nothing else: no prose, no numbering, no code fence."
    )
    parts = [
        f"The project's labels are: {', '.join(json.dumps(name) for name in labels)}.",
        f"Write {count} new, varied texts whose correct label is {json.dumps(label)}: each "
        "must read like a real input, and clearly belong to this label and to no other.",
    ]
    if guidelines.strip():
        parts.append("Labeling guidelines:\n" + guidelines.strip()[:MAX_GUIDELINE_CHARS])
    if examples:
        listed = "\n".join(f"- {json.dumps(text, ensure_ascii=False)}" for text in examples)
        parts.append(f"Examples labeled {json.dumps(label)} (do not copy them):\n{listed}")
    if instructions:
        parts.append("Additional instructions:\n" + instructions.strip())
    parts.append(
        f"Answer format: a JSON array of exactly {count} strings, for example "
        '["first text", "second text"].'
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def prompt_sha256(messages: Messages) -> str:
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)


def parse_answer(content: str | None) -> list[Any] | None:
    """The JSON array of an answer (a ```json fence and an {"items": [...]} wrapper are
    tolerated), or None when the answer is malformed."""
    if content is None:
        return None
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if len(lists) == 1 else None
    return value if isinstance(value, list) else None


def validate_texts(
    entries: Sequence[Any], *, max_chars: int
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """The usable (text, content hash) pairs of an answer, in order, and the rejections by
    reason. Entries are strings or {"text": string}; texts are stripped."""
    kept: list[tuple[str, str]] = []
    rejected: Counter[str] = Counter()
    seen: set[str] = set()
    for entry in entries:
        value = entry.get("text") if isinstance(entry, dict) else entry
        if not isinstance(value, str):
            rejected["not_a_string"] += 1
            continue
        text = value.strip()
        if not text:
            rejected["empty"] += 1
        elif "\x00" in text:
            rejected["invalid_text"] += 1
        elif len(text) > max_chars:
            rejected["too_long"] += 1
        elif (digest := content_hash(text)) in seen:
            rejected["duplicate_in_response"] += 1
        else:
            seen.add(digest)
            kept.append((text, digest))
    return kept, rejected


# --- the job --------------------------------------------------------------------------------------


def run_generation(
    context: JobContext, *, sleep: Sleeper = time.sleep, client: "openai.OpenAI | None" = None
) -> dict[str, Any]:
    """Job function. Compute the cap, then ask for texts until the cap or the count is
    reached or attempts run out; each answer's valid texts are stored in one transaction.
    Items stored before a later call fails are kept and reported (the job succeeds with
    `stopped`); a job that stored nothing fails with the problem."""
    settings = context.settings
    _require_configured(settings)
    p = context.params
    label, requested, temperature = p["label"], int(p["count"]), float(p["temperature"])
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        if label not in project.labels:
            raise ValidationFailed(f"label: {label!r} is no longer a label of this project.")
        human_labeled, existing_synthetic = _counts(session, project_id=project.id or 0)
        examples = _examples(session, project=project, label=label)
    allowed = allowed_synthetic(
        ratio=project.synthetic_max_ratio,
        human_labeled=human_labeled,
        existing_synthetic=existing_synthetic,
        requested=requested,
    )
    target = min(requested, allowed)
    client = client or make_client(settings)
    rng = random.Random(context.job_id)
    created: list[int] = []
    rejected: Counter[str] = Counter()
    hashes: list[str] = []
    calls = retries = failed_attempts = 0
    stopped: str | None = None
    while (
        len(created) < target and failed_attempts <= settings.llm_max_retries and calls < MAX_CALLS
    ):
        context.progress(0.05 + 0.9 * len(created) / target)
        remaining = target - len(created)
        messages = build_prompt(
            guidelines=project.guidelines,
            labels=project.labels,
            label=label,
            examples=examples,
            instructions=p.get("instructions"),
            count=min(remaining, MAX_PER_CALL),
        )
        digest = prompt_sha256(messages)
        try:
            content, took = complete(
                client,
                model=settings.llm_model,
                messages=messages,
                temperature=temperature,
                max_retries=settings.llm_max_retries,
                sleep=sleep,
                rng=rng,
            )
        except (LLMUnavailable, LLMRefused) as error:
            if not created:
                raise
            stopped = f"{error.slug}: {error.detail}"
            break
        calls += 1
        retries += took
        if digest not in hashes:
            hashes.append(digest)
        entries = parse_answer(content)
        if entries is None:
            rejected["malformed_response"] += 1
            failed_attempts += 1
            continue
        provenance = {
            "model": settings.llm_model,
            "temperature": temperature,
            "prompt_sha256": digest,
            "label": label,
            "job_id": context.job_id,
        }
        new_ids = _store(
            context,
            project_id=project.id or 0,
            entries=entries,
            remaining=remaining,
            max_chars=settings.max_text_chars,
            provenance=provenance,
            rejected=rejected,
        )
        created.extend(new_ids)
        if not new_ids:
            failed_attempts += 1
    if len(created) < target and stopped is None:
        stopped = "attempts_exhausted"
    return {
        "requested": requested,
        "allowed": allowed,
        "created": len(created),
        "capped": allowed < requested,
        "item_ids": created,
        "label": label,
        "human_labeled": human_labeled,
        "existing_synthetic": existing_synthetic,
        "synthetic_max_ratio": project.synthetic_max_ratio,
        "rejected": dict(sorted((+rejected).items())),  # + drops zero counts
        "llm_calls": calls,
        "llm_retries": retries,
        "model": settings.llm_model,
        "temperature": temperature,
        "prompt_sha256": hashes,
        "stopped": stopped,
    }


def _store(
    context: JobContext,
    *,
    project_id: int,
    entries: Sequence[Any],
    remaining: int,
    max_chars: int,
    provenance: dict[str, Any],
    rejected: Counter[str],
) -> list[int]:
    """Validate one answer and store at most `remaining` of its texts in one transaction
    (through the ingest service, so its dedupe, limits and race handling apply)."""
    kept, reasons = validate_texts(entries, max_chars=max_chars)
    rejected.update(reasons)
    with context.database.session(write=True) as session:
        existing = _existing_hashes(session, project_id=project_id, hashes=[d for _, d in kept])
        fresh = [text for text, digest in kept if digest not in existing]
        rejected["duplicate_existing"] += len(kept) - len(fresh)
        if len(fresh) > remaining:
            rejected["over_cap"] += len(fresh) - remaining
            fresh = fresh[:remaining]
        if not fresh:
            return []
        report = ingest_items(
            session,
            project_id=project_id,
            entries=[
                (
                    index,
                    {
                        "text": text,
                        "source": ItemSource.synthetic.value,
                        "metadata": {"synthetic": provenance},
                    },
                )
                for index, text in enumerate(fresh)
            ],
            max_text_chars=max_chars,
        )
    ids: list[int] = []
    for result in report.results:
        if result.status == "created" and result.id is not None:
            ids.append(result.id)
        elif result.status == "duplicate":  # written by someone else meanwhile
            rejected["duplicate_existing"] += 1
        else:
            rejected["invalid_text"] += 1
    return ids


def _counts(session: Session, *, project_id: int) -> tuple[int, int]:
    """Human-labeled non-synthetic items (the training set's definition) and all synthetic
    items of the project, labeled or not."""
    human = session.exec(
        select(func.count())
        .select_from(Item)
        .where(
            col(Item.project_id) == project_id,
            col(Item.resolved_by).in_(HUMAN_RESOLUTIONS),
            col(Item.resolved_label).is_not(None),
            col(Item.source) != ItemSource.synthetic,
        )
    ).one()
    synthetic = session.exec(
        select(func.count())
        .select_from(Item)
        .where(col(Item.project_id) == project_id, col(Item.source) == ItemSource.synthetic)
    ).one()
    return int(human), int(synthetic)


def _examples(session: Session, *, project: Project, label: str) -> list[str]:
    """Up to MAX_EXAMPLES texts of the label: the project's own examples first, then items
    humans labeled so (never synthetic ones, so the LLM does not imitate itself)."""
    texts = [str(e.get("text", "")) for e in project.examples if e.get("label") == label]
    if len(texts) < MAX_EXAMPLES:
        texts += session.exec(
            select(Item.text)
            .where(
                col(Item.project_id) == project.id,
                col(Item.resolved_label) == label,
                col(Item.resolved_by).in_(HUMAN_RESOLUTIONS),
                col(Item.source) != ItemSource.synthetic,
            )
            .order_by(col(Item.id))
            .limit(MAX_EXAMPLES)
        ).all()
    chosen: list[str] = []
    seen: set[str] = set()
    for text in texts:
        digest = content_hash(text)
        if text.strip() and digest not in seen:
            seen.add(digest)
            chosen.append(text.strip()[:MAX_EXAMPLE_CHARS])
    return chosen[:MAX_EXAMPLES]


def _existing_hashes(session: Session, *, project_id: int, hashes: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(hashes), IN_CLAUSE_CHUNK):
        chunk = hashes[start : start + IN_CLAUSE_CHUNK]
        found.update(
            session.exec(
                select(Item.content_hash).where(
                    col(Item.project_id) == project_id, col(Item.content_hash).in_(chunk)
                )
            )
        )
    return found
