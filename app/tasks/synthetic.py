"""The synthetic generation job: ask the LLM for texts of one label until the cap or the
count is reached, validate and deduplicate them, store them as synthetic items. Malformed
answers are retried a bounded number of times (app/services/synthetic.py queues the job)."""

import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, func, select

from app.errors import LLMRefused, LLMUnavailable, ValidationFailed
from app.jobs.context import JobContext
from app.models.base import HUMAN_RESOLUTIONS, ItemSource
from app.models.item import Item
from app.models.job_kinds import SyntheticParams, SyntheticResult
from app.models.project import Project
from app.services.items import content_hash, ingest_items
from app.services.project_loading import load_project
from app.services.synthetic import require_configured
from app.sources.llm import Messages, Sleeper, complete, make_client

if TYPE_CHECKING:
    import openai

MAX_EXAMPLES = 5  # examples of the target label shown in the prompt
MAX_EXAMPLE_CHARS = 500  # each one cut to this length
MAX_GUIDELINE_CHARS = 8_000
MAX_PER_CALL = 50  # texts asked for in one completion
MAX_CALLS = 100  # hard bound on completions per job, whatever the answers
IN_CLAUSE_CHUNK = 1_000


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
) -> SyntheticResult:
    """Job function. Compute the cap, then ask for texts until the cap or the count is
    reached or attempts run out; each answer's valid texts are stored in one transaction.
    Items stored before a later call fails are kept and reported (the job succeeds with
    `stopped`); a job that stored nothing fails with the problem."""
    settings = context.settings
    require_configured(settings)
    asked = context.read_params(SyntheticParams)
    label, requested, temperature = asked.label, asked.count, asked.temperature
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
    tally = _generate(
        context,
        asked,
        project,
        examples,
        target=min(requested, allowed),
        client=client or make_client(settings),
        sleep=sleep,
    )
    return SyntheticResult(
        requested=requested,
        allowed=allowed,
        created=len(tally.created),
        capped=allowed < requested,
        item_ids=tally.created,
        label=label,
        human_labeled=human_labeled,
        existing_synthetic=existing_synthetic,
        synthetic_max_ratio=project.synthetic_max_ratio,
        rejected=dict(sorted((+tally.rejected).items())),  # + drops zero counts
        llm_calls=tally.calls,
        llm_retries=tally.retries,
        model=settings.llm_model,
        temperature=temperature,
        prompt_sha256=tally.hashes,
        stopped=tally.stopped,
    )


@dataclass
class _Tally:
    """What a generation's calls produced so far."""

    created: list[int] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    hashes: list[str] = field(default_factory=list)  # the distinct prompts, in order
    calls: int = 0
    retries: int = 0
    failed_attempts: int = 0  # calls that stored nothing
    stopped: str | None = None  # why it stopped short of the target


def _generate(
    context: JobContext,
    asked: SyntheticParams,
    project: Project,
    examples: list[str],
    *,
    target: int,
    client: "openai.OpenAI",
    sleep: Sleeper,
) -> _Tally:
    """Ask until `target` items are stored, more than llm_max_retries calls stored nothing,
    or MAX_CALLS calls were made. An LLM failure fails the job unless something is stored."""
    settings = context.settings
    rng = random.Random(context.job_id)
    tally = _Tally()
    while (
        len(tally.created) < target
        and tally.failed_attempts <= settings.llm_max_retries
        and tally.calls < MAX_CALLS
    ):
        context.progress(0.05 + 0.9 * len(tally.created) / target)
        remaining = target - len(tally.created)
        messages = build_prompt(
            guidelines=project.guidelines,
            labels=project.labels,
            label=asked.label,
            examples=examples,
            instructions=asked.instructions,
            count=min(remaining, MAX_PER_CALL),
        )
        digest = prompt_sha256(messages)
        try:
            content, took = complete(
                client,
                model=settings.llm_model,
                messages=messages,
                temperature=asked.temperature,
                max_retries=settings.llm_max_retries,
                sleep=sleep,
                rng=rng,
            )
        except (LLMUnavailable, LLMRefused) as error:
            if not tally.created:
                raise
            tally.stopped = f"{error.slug}: {error.detail}"
            return tally
        tally.calls += 1
        tally.retries += took
        if digest not in tally.hashes:
            tally.hashes.append(digest)
        new_ids = _store_answer(
            context, asked, project, content, prompt=digest, remaining=remaining, tally=tally
        )
        tally.created.extend(new_ids)
        if not new_ids:
            tally.failed_attempts += 1
    if len(tally.created) < target:
        tally.stopped = "attempts_exhausted"
    return tally


def _store_answer(
    context: JobContext,
    asked: SyntheticParams,
    project: Project,
    content: str | None,
    *,
    prompt: str,
    remaining: int,
    tally: _Tally,
) -> list[int]:
    """The ids stored from one answer; none from a malformed one."""
    entries = parse_answer(content)
    if entries is None:
        tally.rejected["malformed_response"] += 1
        return []
    provenance = {
        "model": context.settings.llm_model,
        "temperature": asked.temperature,
        "prompt_sha256": prompt,
        "label": asked.label,
        "job_id": context.job_id,
    }
    return _store(
        context,
        project_id=project.id or 0,
        entries=entries,
        remaining=remaining,
        max_chars=context.settings.max_text_chars,
        provenance=provenance,
        rejected=tally.rejected,
    )


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
