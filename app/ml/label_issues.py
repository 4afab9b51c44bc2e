"""Which given labels are probably wrong (cleanlab's confident learning on out-of-fold
probabilities), the estimated noise between labels, class imbalance and model-based outliers."""

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ml.duplicates import DuplicateGroup, near_duplicate_groups

# Rows of pred_probs may be off 1 by rounding (float32 models, JSON round trips), not more.
_ROW_SUM_TOLERANCE = 1e-3
# With n_jobs=1 cleanlab.filter.find_label_issues still hands each class's rows to its workers
# through module globals (pred_probs_by_class, prune_count_matrix_cols): two threads in one
# process would read each other's data. One call at a time.
_cleanlab_filter_lock = threading.Lock()
# imbalanced when the largest class outnumbers the smallest non-empty one this many times.
IMBALANCE_RATIO = 10.0
# ... or when a class holds less than this fraction of the uniform share 1/K.
MINORITY_FRACTION = 0.5


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """cleanlab's verdict on each given label."""

    is_issue: np.ndarray
    """(n,) bool: the given label is probably wrong."""
    label_quality: np.ndarray
    """(n,) float64 in [0, 1]: self-confidence, the probability the model gives the given label
    (over the classes in use, see find_label_issues); lower = more suspicious."""
    suggested: np.ndarray
    """(n,) int64: the model's label, argmax of pred_probs."""
    order: np.ndarray
    """(n_issues,) int64 indices of the issues, worst first: lowest label_quality, ties by index."""


@dataclass(frozen=True)
class ConfusedPair:
    """One off-diagonal cell of the noise matrix: items given `given` whose true label is
    estimated to be `suggested`."""

    given: int
    suggested: int
    share: float
    """The cell of the joint distribution: the fraction of all items in this cell."""
    estimated_count: int
    """round(share * n)."""


@dataclass(frozen=True, eq=False)
class ImbalanceFinding:
    """How unevenly the labels are spread over the classes; see class_imbalance for the rule."""

    counts: np.ndarray
    """(K,) int64 items per class."""
    shares: np.ndarray
    """(K,) float64 counts / total (zeros when there are no items)."""
    ratio: float
    """Largest count over smallest non-zero count; NaN when no class has items."""
    minority: np.ndarray
    """int64 class codes whose share is below MINORITY_FRACTION / K (empty classes included)."""
    empty: np.ndarray
    """int64 class codes with no items (also in minority, kept out of ratio)."""
    imbalanced: bool


@dataclass(frozen=True, eq=False)
class _InUse:
    """The problem restricted to the classes that some given label uses."""

    classes: np.ndarray
    """int64 codes of the used classes, ascending."""
    labels: np.ndarray
    """(n,) int64 positions of the given labels in `classes`."""
    pred_probs: np.ndarray
    """(n, len(classes)) float64 columns of `classes`, rows renormalised to sum to 1."""


def _check(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    given = np.asarray(labels)
    probs = np.asarray(pred_probs, dtype=np.float64)
    if given.ndim != 1:
        raise ValueError(f"labels must be a vector, got shape {given.shape}")
    if given.size and not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"labels must be integer codes, got dtype {given.dtype}")
    given = given.astype(np.int64, copy=False)
    if probs.ndim != 2:
        raise ValueError(f"pred_probs must be a matrix (n, K), got shape {probs.shape}")
    if probs.shape[0] != given.size:
        raise ValueError(f"pred_probs has {probs.shape[0]} rows but there are {given.size} labels")
    n_classes = probs.shape[1]
    if given.size and (given.min() < 0 or given.max() >= n_classes):
        raise ValueError(f"labels must be codes in [0, {n_classes}) (one per pred_probs column)")
    if not np.all(np.isfinite(probs)) or (probs.size and (probs.min() < 0 or probs.max() > 1)):
        raise ValueError("pred_probs must be finite probabilities in [0, 1]")
    if probs.size and np.abs(probs.sum(axis=1) - 1.0).max() > _ROW_SUM_TOLERANCE:
        raise ValueError("every row of pred_probs must sum to 1")
    if np.unique(given).size < 2:
        raise ValueError("labels must use at least 2 classes: there is nothing to confuse")
    return given, probs


def _in_use(labels: np.ndarray, probs: np.ndarray) -> _InUse:
    """cleanlab estimates a per-class threshold from the items given each class, so a class no
    item is given has none: left in, find_label_issues warns about it on every call and what the
    other estimates make of it is undocumented. It is taken out and the rows renormalised over the
    rest; an item the model puts entirely in unused classes is spread uniformly (no evidence
    either way)."""
    classes = np.flatnonzero(np.bincount(labels, minlength=probs.shape[1]))
    position = np.full(probs.shape[1], -1, dtype=np.int64)
    position[classes] = np.arange(classes.size)
    kept = probs[:, classes]
    total = kept.sum(axis=1, keepdims=True)
    uniform = np.full(kept.shape, 1.0 / classes.size)
    renormalised = np.where(total > 0, kept / np.where(total > 0, total, 1.0), uniform)
    return _InUse(classes=classes, labels=position[labels], pred_probs=renormalised)


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> LabelIssues:
    """Flag the given labels confident learning finds inconsistent with out-of-fold `pred_probs`.

    labels: (n,) int64 codes 0..K-1; pred_probs: (n, K) out-of-fold probabilities, columns in
    code order, rows summing to 1 (in-sample probabilities hide the errors). At least two
    classes must be in use (ValueError otherwise).

    is_issue is cleanlab.filter.find_label_issues (prune by noise rate), label_quality
    cleanlab.rank.get_label_quality_scores (self-confidence), both over the classes in use:
    classes no item is given are dropped and rows renormalised first. suggested is the argmax
    over all K columns, so it may name an unused class.
    """
    given, probs = _check(labels, pred_probs)
    used = _in_use(given, probs)
    # Imported on first use: docs/design.md, "Import weight".
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with _cleanlab_filter_lock, warnings.catch_warnings():
        # A class given to a single item cannot be pruned from (cleanlab keeps at least one item
        # per class): it says so for every such class on every call. Its item still gets a
        # label_quality; the flag is all that is lost, and there is nothing to do about it here.
        warnings.filterwarnings(
            "ignore", message="May not flag all label issues in class", category=UserWarning
        )
        is_issue = cleanlab_find_label_issues(used.labels, used.pred_probs, n_jobs=1)
    quality = get_label_quality_scores(used.labels, used.pred_probs)
    label_quality = np.clip(np.asarray(quality, dtype=np.float64), 0.0, 1.0)
    issues = np.flatnonzero(is_issue)
    # lexsort's last key is primary; issues is ascending, so equal qualities stay in index order.
    order = issues[np.lexsort((issues, label_quality[issues]))].astype(np.int64)
    return LabelIssues(
        is_issue=np.asarray(is_issue, dtype=bool),
        label_quality=label_quality,
        suggested=np.argmax(probs, axis=1).astype(np.int64),
        order=order,
    )


def noise_matrix(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """cleanlab's estimate of the joint distribution P(given label = i, true label = j), (K, K)
    float64 summing to 1 (cleanlab.count.estimate_joint, the calibrated confident joint).

    Rows sum to the share of items given each class; the diagonal is the estimated share of
    correct labels, the off-diagonal cells the estimated noise. Rows and columns of classes no
    item is given are zero (see find_label_issues for why they are left out).
    """
    # Imported on first use: docs/design.md, "Import weight".
    from cleanlab.count import estimate_joint

    given, probs = _check(labels, pred_probs)
    used = _in_use(given, probs)
    joint = np.zeros((probs.shape[1], probs.shape[1]), dtype=np.float64)
    joint[np.ix_(used.classes, used.classes)] = estimate_joint(used.labels, used.pred_probs)
    return joint


def confused_pairs(
    joint: np.ndarray, n: int, *, top: int = 10, min_share: float = 0.0
) -> list[ConfusedPair]:
    """The `top` largest off-diagonal cells of a noise matrix with share >= min_share and > 0,
    biggest first (ties by given, then suggested label); n is the number of items judged."""
    matrix = np.asarray(joint, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"joint must be a square matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("joint must be finite")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    given, suggested = np.nonzero(~np.eye(matrix.shape[0], dtype=bool))
    share = matrix[given, suggested]
    keep = (share > 0) & (share >= min_share)
    given, suggested, share = given[keep], suggested[keep], share[keep]
    order = np.lexsort((suggested, given, -share))[:top]
    return [
        ConfusedPair(
            given=int(given[k]),
            suggested=int(suggested[k]),
            share=float(share[k]),
            estimated_count=round(float(share[k]) * n),
        )
        for k in order
    ]


def class_imbalance(counts: np.ndarray) -> ImbalanceFinding:
    """Whether the given labels are too unevenly spread for a model to learn every class.

    The rule: imbalanced when the largest class has at least IMBALANCE_RATIO (10) times the items
    of the smallest non-empty one, or when some class's share is below MINORITY_FRACTION (half)
    of the uniform share 1/K. A class with no items is a minority (share 0) and listed in `empty`;
    it is kept out of the ratio, which would otherwise be infinite. With no items at all nothing
    is imbalanced (ratio NaN): there is no spread to judge.
    """
    values = np.asarray(counts)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"counts must be a non-empty vector, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise ValueError("counts must be finite numbers")
    if values.min() < 0 or np.any(values != np.round(values)):
        raise ValueError("counts must be non-negative whole numbers")
    per_class = values.astype(np.int64)
    total = int(per_class.sum())
    empty = np.flatnonzero(per_class == 0).astype(np.int64)
    if total == 0:
        return ImbalanceFinding(
            counts=per_class,
            shares=np.zeros(per_class.size),
            ratio=math.nan,
            minority=np.empty(0, dtype=np.int64),
            empty=empty,
            imbalanced=False,
        )
    shares = per_class / total
    ratio = float(per_class.max() / per_class[per_class > 0].min())
    minority = np.flatnonzero(shares < MINORITY_FRACTION / per_class.size).astype(np.int64)
    return ImbalanceFinding(
        counts=per_class,
        shares=shares,
        ratio=ratio,
        minority=minority,
        empty=empty,
        imbalanced=bool(ratio >= IMBALANCE_RATIO or minority.size > 0),
    )


def outlier_scores(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """(n,) float64 in [0, 1], lower = more atypical: cleanlab's OutOfDistribution on pred_probs
    (one minus the normalised entropy of the probabilities after subtracting each class's
    confident threshold), over the classes in use.

    These are model-based outliers: items the model cannot place in any class it learned
    (flat probabilities even after calibration), not items far from the others in feature space.
    An odd item the model confidently puts in a class scores as typical. The scores only rank
    items within one dataset: after the thresholds are subtracted even confident rows can score
    well below 1 (0.06 for 0.9-confident rows of a 20-item class), hence outliers() by share.
    """
    # Imported on first use: docs/design.md, "Import weight".
    from cleanlab.outlier import OutOfDistribution

    given, probs = _check(labels, pred_probs)
    used = _in_use(given, probs)
    scores = OutOfDistribution().fit_score(
        pred_probs=used.pred_probs, labels=used.labels, verbose=False
    )
    return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)


def outliers(
    scores: np.ndarray, *, share: float = 0.01, max_score: float | None = None
) -> np.ndarray:
    """int64 indices of the ceil(share * n) lowest scores, most atypical first (ties by index);
    with max_score, only those scoring at most max_score."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be a vector, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    # ceil: a small project with any share still gets its most atypical item looked at.
    k = math.ceil(share * values.size - 1e-9)  # 0.07 * 100 is 7.000000000000001
    chosen = np.argsort(values, kind="stable")[:k].astype(np.int64)
    if max_score is not None:
        chosen = chosen[values[chosen] <= max_score]
    return chosen


# --- judging a labeled dataset: every finding of a label-issue report ---------------------------


@dataclass(eq=False)
class Judged:
    """Everything a report decided about its items, in the order of the judged items.

    findings is a JSON-ready dict the caller may still add to (it is stored as it is).
    """

    item_ids: np.ndarray
    given: list[str]
    suggested: list[str]
    label_quality: np.ndarray
    suggestion_confidence: np.ndarray
    flags: dict[str, np.ndarray]
    """(n,) bool per issue type: "label", "near_duplicate", "outlier" (in that order)."""
    findings: dict[str, Any]
    is_issue: np.ndarray = field(init=False)
    """(n,) bool: any flag."""
    rank: np.ndarray = field(init=False)
    """(n,) int64: 1 = lowest label quality; ties by item id, so the order is reproducible."""
    counts: dict[str, int] = field(init=False)
    """Flagged items per issue type."""

    def __post_init__(self) -> None:
        flags = self.flags
        self.is_issue = flags["label"] | flags["near_duplicate"] | flags["outlier"]
        order = np.lexsort((self.item_ids, self.label_quality))
        self.rank = np.empty(len(self.item_ids), dtype=np.int64)
        self.rank[order] = np.arange(1, len(self.item_ids) + 1)
        self.counts = {str(kind): int(flag.sum()) for kind, flag in flags.items()}


def judge(
    *,
    item_ids: np.ndarray,
    given: list[str],
    classes: list[str],
    oof: np.ndarray,
    texts: Sequence[str],
    near_duplicate_threshold: float,
    outlier_share: float,
    reviewed: np.ndarray,
    num_perm: int,
    max_listed_groups: int,
    max_listed_outliers: int,
) -> Judged:
    """Judge every given label against out-of-fold probabilities and report on the dataset.

    item_ids (n,) int64, given the n labels, classes the columns of oof (n, K) in order, texts
    the items' texts (for near-duplicates), reviewed (n,) bool: a reviewer decided the label.
    Findings list at most max_listed_groups duplicate groups and max_listed_outliers outliers;
    the flags cover every item.
    """
    codes = label_codes(given, classes)
    found = find_label_issues(codes, oof)
    joint = noise_matrix(codes, oof)
    pairs = confused_pairs(joint, len(codes))
    imbalance = class_imbalance(np.bincount(codes, minlength=len(classes)))
    scores = outlier_scores(codes, oof)
    outlying = outliers(scores, share=outlier_share)
    groups = near_duplicate_groups(texts, threshold=near_duplicate_threshold, num_perm=num_perm)
    in_group = _members(groups, len(codes))
    is_outlier = np.zeros(len(codes), dtype=bool)
    is_outlier[outlying] = True
    findings = {
        "reviews": _review_finding(found, reviewed),
        "class_imbalance": _imbalance_finding(imbalance, classes),
        "noise_matrix": _noise_finding(joint, pairs, classes),
        "near_duplicate_groups": _near_duplicate_finding(
            groups, in_group, item_ids, given, max_listed=max_listed_groups
        ),
        "outliers": _outlier_finding(outlying, scores, item_ids, max_listed=max_listed_outliers),
    }
    return Judged(
        item_ids=item_ids,
        given=given,
        suggested=[classes[k] for k in found.suggested],
        label_quality=found.label_quality,
        suggestion_confidence=oof[np.arange(len(codes)), found.suggested],
        flags={
            # A reviewer's decision is the final word on a label: the model's doubt about it
            # is counted (in findings["reviews"]), not flagged again.
            "label": found.is_issue & ~reviewed,
            "near_duplicate": in_group,
            "outlier": is_outlier,
        },
        findings=findings,
    )


def label_codes(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """(n,) int64 position of each label in classes (every label must be one of them)."""
    index = {label: k for k, label in enumerate(classes)}
    return np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))


def _members(groups: list[DuplicateGroup], n: int) -> np.ndarray:
    """(n,) bool: the item belongs to some group."""
    in_group = np.zeros(n, dtype=bool)
    for group in groups:
        in_group[group.members] = True
    return in_group


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _review_finding(found: LabelIssues, reviewed: np.ndarray) -> dict[str, int]:
    doubted_but_reviewed = found.is_issue & reviewed
    return {
        "reviewed_items": int(reviewed.sum()),
        "doubted_but_reviewed": int(doubted_but_reviewed.sum()),
    }


def _imbalance_finding(imbalance: ImbalanceFinding, classes: list[str]) -> dict[str, Any]:
    return {
        "imbalanced": imbalance.imbalanced,
        "ratio": _finite(imbalance.ratio),
        "labels": [
            {"label": classes[k], "count": int(c), "share": round(float(s), 4)}
            for k, (c, s) in enumerate(zip(imbalance.counts, imbalance.shares, strict=True))
        ],
        "minority": [classes[k] for k in imbalance.minority],
    }


def _noise_finding(
    joint: np.ndarray, pairs: list[ConfusedPair], classes: list[str]
) -> dict[str, Any]:
    return {
        "labels": classes,
        "joint": [[round(float(v), 5) for v in row] for row in joint],
        "confused_pairs": [
            {
                "given": classes[pair.given],
                "suggested": classes[pair.suggested],
                "share": round(pair.share, 5),
                "estimated_count": pair.estimated_count,
            }
            for pair in pairs
        ],
    }


def _near_duplicate_finding(
    groups: list[DuplicateGroup],
    in_group: np.ndarray,
    item_ids: np.ndarray,
    given: list[str],
    *,
    max_listed: int,
) -> dict[str, Any]:
    return {
        "n_groups": len(groups),
        "n_items": int(in_group.sum()),
        "groups": [
            {
                "item_ids": [int(item_ids[m]) for m in group.members],
                # The same words: ingest refuses texts equal up to case and spacing, so here
                # exact means equal up to punctuation too.
                "exact": group.exact or group.min_similarity >= 1.0,
                "min_similarity": round(group.min_similarity, 4),
                "labels": sorted({given[m] for m in group.members}),
                "conflicting_labels": len({given[m] for m in group.members}) > 1,
            }
            for group in groups[:max_listed]
        ],
    }


def _outlier_finding(
    outlying: np.ndarray, scores: np.ndarray, item_ids: np.ndarray, *, max_listed: int
) -> dict[str, Any]:
    return {
        "n_items": len(outlying),
        "items": [
            {"item_id": int(item_ids[k]), "score": round(float(scores[k]), 5)}
            for k in outlying[:max_listed]
        ],
    }
