"""The agreement report: how far annotators agree, read in plain language, with the likely
causes named when agreement is below the project's threshold; and the pilot-round gate."""

import numpy as np
from sqlmodel import Session

from app.ml import agreement as stats
from app.ml import agreement_causes as causes
from app.models.project import Project
from app.models.quality import (
    AgreementBand,
    AgreementReport,
    AgreementWarning,
    AnnotatorAgreement,
    ConfidenceInterval,
    Interpretation,
    LabelAgreement,
    PairKappa,
)
from app.services.votes import ProjectVotes, load_votes

BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95
EXCELLENT, GOOD = 0.8, 0.6
# Evidence shown with a warning: this many confused pairs and disputed items.
TOP_PAIRS, TOP_ITEMS = 3, 5
# An annotator is "far below the others" this much under the median agreement with others,
# once enough of their labels could be compared.
BELOW_OTHERS_MARGIN, MIN_COMPARED = 0.15, 10
HIGH_ABSTAIN_RATE = 0.2


def band(alpha: float | None) -> AgreementBand:
    if alpha is None:
        return "not_measurable"
    if alpha > EXCELLENT:
        return "excellent"
    return "good" if alpha >= GOOD else "needs_work"


def measured_alpha(session: Session, *, project: Project) -> tuple[float | None, int]:
    """Krippendorff's alpha over the project's human labels, and the items it rests on."""
    counts = stats.label_counts(load_votes(session, project=project).votes)
    return _alpha(counts), int(np.sum(counts.sum(axis=1) >= 2))


def _measurable(counts: np.ndarray) -> bool:
    """Agreement needs items with two labels and more than one label in use among them: when
    everyone always chose the same label, alpha is formally 1 but says nothing yet."""
    pairable = counts[counts.sum(axis=1) >= 2]
    return int(np.count_nonzero(pairable.sum(axis=0))) >= 2


def _alpha(counts: np.ndarray) -> float | None:
    """Alpha at full precision, as reported: the report, its warnings and the pilot gate
    compare that same number with the threshold, so what is shown is what was decided."""
    return _finite(stats.krippendorff_alpha_nominal(counts)) if _measurable(counts) else None


def report(session: Session, *, project: Project) -> AgreementReport:
    loaded = load_votes(session, project=project)
    counts = stats.label_counts(loaded.votes)
    per_item = counts.sum(axis=1)
    alpha = _alpha(counts)
    interval = (
        stats.bootstrap_alpha_interval(
            counts,
            n_boot=BOOTSTRAP_REPLICATES,
            rng=np.random.default_rng(BOOTSTRAP_SEED),
            level=CONFIDENCE_LEVEL,
        )
        if alpha is not None
        else None
    )
    per_annotator = _per_annotator(loaded, counts)
    result = AgreementReport(
        n_items=int(np.sum(per_item >= 1)),
        n_pairable_items=int(np.sum(per_item >= 2)),
        n_annotators=len(loaded.annotators),
        n_labels=int(per_item.sum()),
        krippendorff_alpha=_finite(alpha),
        fleiss_kappa=_finite(stats.fleiss_kappa(counts)),
        percent_agreement=_finite(stats.percent_agreement(counts)),
        confidence_interval=None
        if interval is None
        else ConfidenceInterval(
            level=CONFIDENCE_LEVEL,
            low=float(interval[0]),
            high=float(interval[1]),
            n_boot=BOOTSTRAP_REPLICATES,
            seed=BOOTSTRAP_SEED,
        ),
        pairwise_cohen_kappa=[
            PairKappa(
                a=loaded.annotators[pair.a],
                b=loaded.annotators[pair.b],
                kappa=_finite(pair.kappa),
                n=pair.n,
            )
            for pair in stats.pairwise_cohen_kappa(loaded.votes)
        ],
        per_label=_per_label(loaded, counts),
        per_annotator=per_annotator,
        abstain_rate=_finite(len(loaded.abstain_item) / loaded.n_answers)
        if loaded.n_answers
        else None,
        agreement_threshold=project.agreement_threshold,
        interpretation=_interpret(alpha, interval, int(np.sum(per_item >= 2)), project),
        warnings=[],
    )
    result.warnings = _warnings(result, loaded, counts, project)
    return result


def _finite(value: float | None) -> float | None:
    """A figure as computed (full precision: clients compare and aggregate them; the web app
    rounds for display); None where it is undefined (NaN)."""
    return None if value is None or np.isnan(value) else float(value)


def said(value: float, *, beside: float | None = None) -> str:
    """A figure for a sentence: 4 significant digits, or more where 4 would make it look
    equal to `beside` (the threshold it is compared with) while it is not."""
    for digits in (4, 6, 17):
        text = f"{value:.{digits}g}"
        if beside is None or value == beside or float(text) != beside:
            return text
    return repr(value)


def _per_annotator(loaded: ProjectVotes, counts: np.ndarray) -> list[AnnotatorAgreement]:
    n_annotators = len(loaded.annotators)
    labeled = np.bincount(loaded.votes.annotator, minlength=n_annotators)
    abstained = np.bincount(loaded.abstain_annotator, minlength=n_annotators)
    rates, compared = stats.agreement_with_others(loaded.votes, counts)
    return [
        AnnotatorAgreement(
            annotator=name,
            n_labels=int(labeled[code]),
            n_abstained=int(abstained[code]),
            abstain_rate=float(abstained[code] / max(1, labeled[code] + abstained[code])),
            agreement_with_others=_finite(rates[code]),
            n_compared=int(compared[code]),
        )
        for code, name in enumerate(loaded.annotators)
    ]


def _majority_labels(counts: np.ndarray) -> np.ndarray:
    """Each item's unique most-chosen label, -1 for a tie or no label."""
    if counts.size == 0:
        return np.full(counts.shape[0], -1, dtype=np.int64)
    top = counts.max(axis=1)
    unique = (counts == top[:, None]).sum(axis=1) == 1
    return np.where(unique & (top > 0), counts.argmax(axis=1), -1)


def _per_label(loaded: ProjectVotes, counts: np.ndarray) -> list[LabelAgreement]:
    agreement, chosen = stats.per_label_agreement(counts)
    majority = _majority_labels(counts)
    n_labels = len(loaded.labels)
    known = majority >= 0
    answers = np.bincount(majority[known], weights=counts.sum(axis=1)[known], minlength=n_labels)
    abstain_majority = majority[loaded.abstain_item]
    abstains = np.bincount(abstain_majority[abstain_majority >= 0], minlength=n_labels)
    return [
        LabelAgreement(
            label=label,
            agreement=_finite(agreement[code]),
            n=int(chosen[code]),
            abstain_rate=float(abstains[code] / (answers[code] + abstains[code]))
            if answers[code] + abstains[code]
            else None,
        )
        for code, label in enumerate(loaded.labels)
    ]


def _interpret(
    alpha: float | None, interval: tuple[float, float] | None, pairable: int, project: Project
) -> Interpretation:
    reading = band(alpha)
    if alpha is None:
        return Interpretation(
            band=reading,
            summary="Agreement cannot be measured yet: it needs items labeled by at least two "
            "people, with more than one label in use. In the pilot phase every item goes to two "
            "annotators.",
        )
    span = f" (95% CI {interval[0]:.2f} to {interval[1]:.2f})" if interval else ""
    verdict = {
        "excellent": "excellent: the labels are reliable.",
        "good": "good: usable, but check the warnings for ambiguous labels.",
        "needs_work": "below 0.6: the task definition needs work before more labels are "
        "collected; the labels disagree too often to train on.",
    }[reading]
    threshold = f" The project's threshold is {project.agreement_threshold:g}; " + (
        "it is met." if alpha >= project.agreement_threshold else "it is not met."
    )
    shown = said(alpha, beside=project.agreement_threshold)
    return Interpretation(
        band=reading,
        summary=f"Krippendorff's alpha is {shown}{span} over {pairable} items labeled by "
        f"at least two people: {verdict}{threshold}",
    )


def _warnings(
    report: AgreementReport, loaded: ProjectVotes, counts: np.ndarray, project: Project
) -> list[AgreementWarning]:
    warnings: list[AgreementWarning] = []
    alpha = report.krippendorff_alpha
    if alpha is None:
        warnings.append(
            AgreementWarning(
                code="not_measurable",
                message="No agreement can be measured: no item has two human labels yet "
                "(or only one label is in use).",
                evidence={"n_pairable_items": report.n_pairable_items},
            )
        )
    elif alpha < project.agreement_threshold:
        warnings.append(
            AgreementWarning(
                code="below_threshold",
                message=f"Alpha {said(alpha, beside=project.agreement_threshold)} is below the "
                f"project's agreement threshold "
                f"{project.agreement_threshold:g}. The likely causes follow, with evidence.",
                evidence={"krippendorff_alpha": alpha, "threshold": project.agreement_threshold},
            )
        )
        warnings.extend(_causes(report, loaded, counts))
    if report.abstain_rate is not None and report.abstain_rate > HIGH_ABSTAIN_RATE:
        worst = sorted(
            (a for a in report.per_label if a.abstain_rate is not None),
            key=lambda a: -(a.abstain_rate or 0.0),
        )[:TOP_PAIRS]
        warnings.append(
            AgreementWarning(
                code="high_abstain_rate",
                message=f'{report.abstain_rate:.0%} of answers are "I don\'t know": the '
                "guidelines may not cover some cases.",
                evidence={
                    "abstain_rate": report.abstain_rate,
                    "labels": [{"label": a.label, "abstain_rate": a.abstain_rate} for a in worst],
                },
            )
        )
    return warnings


def _causes(
    report: AgreementReport, loaded: ProjectVotes, counts: np.ndarray
) -> list[AgreementWarning]:
    """The likely causes of agreement below the threshold, each a warning when it has evidence:
    ambiguous label pairs, disputed items, annotators far below the others."""
    found = (
        _confused_labels_warning(loaded, counts),
        _disputed_items_warning(loaded, counts),
        _annotators_below_others_warning(report),
    )
    return [warning for warning in found if warning is not None]


def _confused_labels_warning(loaded: ProjectVotes, counts: np.ndarray) -> AgreementWarning | None:
    pairs = causes.confused_label_pairs(counts, top=TOP_PAIRS)
    if not pairs:
        return None
    names = "; ".join(f"{loaded.labels[p.first]} vs {loaded.labels[p.second]}" for p in pairs)
    return AgreementWarning(
        code="confused_labels",
        message=f"Ambiguous categories: annotators most often split between {names}. "
        "Sharpen the definitions of these labels and add contrasting examples.",
        evidence={
            "pairs": [
                {
                    "labels": [loaded.labels[pair.first], loaded.labels[pair.second]],
                    "disagreements": float(pair.disagreements),
                    "share_of_disagreement": float(pair.share),
                }
                for pair in pairs
            ]
        },
    )


def _disputed_items_warning(loaded: ProjectVotes, counts: np.ndarray) -> AgreementWarning | None:
    disputed = causes.most_disputed_items(counts, top=TOP_ITEMS)
    if not disputed:
        return None
    return AgreementWarning(
        code="disputed_items",
        message="These items split their annotators the most: they are the edge cases "
        "the guidelines are missing. Decide them (POST .../reviews) and add them to "
        "the guidelines as examples.",
        evidence={
            "items": [
                {
                    "item_id": int(loaded.item_ids[code]),
                    "disagreement": float(disagreement),
                    "votes": {
                        loaded.labels[label]: int(counts[code, label])
                        for label in np.flatnonzero(counts[code])
                    },
                }
                for code, disagreement in disputed
            ]
        },
    )


def _annotators_below_others_warning(report: AgreementReport) -> AgreementWarning | None:
    """Judged on the report's own figures, so the evidence shows what was compared."""
    annotators = report.per_annotator
    found = causes.annotators_below_others(
        np.array(
            [
                np.nan if a.agreement_with_others is None else a.agreement_with_others
                for a in annotators
            ],
            dtype=np.float64,
        ),
        np.array([a.n_compared for a in annotators], dtype=np.int64),
        min_compared=MIN_COMPARED,
        margin=BELOW_OTHERS_MARGIN,
    )
    if found is None or not found.annotators.size:
        return None
    below = [annotators[code] for code in found.annotators]
    return AgreementWarning(
        code="annotators_below_others",
        message=f"{', '.join(a.annotator for a in below)} agree with the others "
        f"far less than the median annotator ({found.median:.0%}): they may need "
        "training on the guidelines.",
        evidence={
            "median_agreement_with_others": float(found.median),
            "annotators": [
                {
                    "annotator": a.annotator,
                    "agreement_with_others": a.agreement_with_others,
                    "n_compared": a.n_compared,
                }
                for a in below
            ],
        },
    )
