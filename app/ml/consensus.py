"""Consensus labels from several annotators: majority vote (the baseline), Dawid-Skene EM, and
CROWDLAB (cleanlab), each with per-item and per-annotator quality estimates."""

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from app.ml.agreement import Votes, agreement_with_others, label_counts

# Posteriors closer than this are a tie: Dawid-Skene then leaves the item undecided.
_POSTERIOR_TIE = 1e-9
# Size of the seeded perturbation that breaks exact ties in the initial soft counts.
_INIT_JITTER = 1e-3
# cleanlab breaks its last majority-vote ties with numpy's global RNG; seeded, the same votes
# give the same consensus on every call.
CROWDLAB_SEED = 0
_global_rng_lock = threading.Lock()


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """numpy's global RNG seeded for the block and restored after it; one block at a time,
    since the state is shared by every thread."""
    with _global_rng_lock:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@dataclass(frozen=True, eq=False)
class Consensus:
    """One consensus label and quality per item, and a quality per annotator."""

    labels: np.ndarray
    """(n_items,) int64 label codes; -1 = undecided (a tie, or no label)."""
    quality: np.ndarray
    """(n_items,) float in [0, 1]: confidence in the consensus label; NaN where no label."""
    annotator_quality: np.ndarray
    """(n_annotators,) float in [0, 1]; NaN where undefined (no labels, or nothing to compare)."""
    annotator_n: np.ndarray
    """(n_annotators,) int64: labels each annotator gave."""
    converged: bool = True
    iterations: int = 0


def _annotator_n(votes: Votes) -> np.ndarray:
    return np.bincount(votes.annotator, minlength=votes.n_annotators).astype(np.int64)


def _plurality(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique most-voted label (-1 on a tie or no label) and its vote share (NaN if no label)."""
    m = counts.sum(axis=1)
    labels = np.full(len(counts), -1, dtype=np.int64)
    share = np.full(len(counts), np.nan)
    if counts.shape[1] == 0:
        return labels, share
    top = counts.max(axis=1)
    unique_top = np.count_nonzero(counts == top[:, None], axis=1) == 1
    voted = m > 0
    decided = voted & unique_top
    labels[decided] = np.argmax(counts[decided], axis=1)
    share[voted] = top[voted] / m[voted]
    return labels, share


def majority_vote(votes: Votes) -> Consensus:
    """The label more than half of an item's votes chose; without one (a tie, or a plurality
    such as 2 of 4) the item is -1, never silently the first label.

    quality is the top label's vote share (also when undecided, with label -1);
    annotator_quality is agreement_with_others (agreement with the other annotators' majority).
    """
    counts = label_counts(votes)
    labels, share = _plurality(counts)
    labels[~(share > 0.5)] = -1  # NaN (no votes) compares False: undecided too
    rate, _ = agreement_with_others(votes, counts)
    return Consensus(
        labels=labels, quality=share, annotator_quality=rate, annotator_n=_annotator_n(votes)
    )


def _normalise_log_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row-wise softmax, row-wise logsumexp) of log-weights, with one exp per entry."""
    peak = values.max(axis=1)
    weights = np.exp(values - peak[:, None])
    total = weights.sum(axis=1)
    weights /= total[:, None]
    log_total: np.ndarray = peak + np.log(total)
    return weights, log_total


def _distinct_vote_sets(votes: Votes, voted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(representative item, item -> representative index) of the distinct vote sets.

    Items with the same (annotator, label) votes have the same posterior, so EM only needs one
    of each, weighted by multiplicity: with 5 annotators and 15 labels, 100k items hold ~25k
    distinct sets. A set is keyed exactly by the labels read as digits, one per annotator, when
    that fits in int64; otherwise every voted item stands for itself.
    """
    items = np.flatnonzero(voted)
    base = votes.n_labels + 1
    if votes.n_annotators * np.log2(base) >= 62:
        inverse = np.full(votes.n_items, -1, dtype=np.int64)
        inverse[items] = np.arange(items.size)
        return items, inverse
    digit = (votes.label + 1) * base ** votes.annotator.astype(np.int64)
    order = votes.by_item
    starts = np.flatnonzero(np.r_[True, votes.item[order][1:] != votes.item[order][:-1]])
    keys = np.add.reduceat(digit[order], starts)  # one exact int64 per voted item, in item order
    _, first, inverse_voted = np.unique(keys, return_index=True, return_inverse=True)
    inverse = np.full(votes.n_items, -1, dtype=np.int64)
    inverse[items] = inverse_voted
    return items[first], inverse


def _initial_posteriors(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Majority-vote soft counts; exact ties at the top get a small seeded nudge so that a
    perfectly symmetric start cannot pin EM to a saddle point, deterministically per seed."""
    m = counts.sum(axis=1, keepdims=True)
    soft: np.ndarray = np.divide(counts, m, out=np.zeros(counts.shape), where=m > 0)
    tied = (counts == counts.max(axis=1, keepdims=True)) & (counts > 0)
    tied &= (np.count_nonzero(tied, axis=1) > 1)[:, None]
    if tied.any():
        soft[tied] += rng.uniform(0.0, _INIT_JITTER, size=int(tied.sum()))
        soft /= np.where(m > 0, soft.sum(axis=1, keepdims=True), 1.0)
    return soft


def dawid_skene(
    votes: Votes,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
) -> Consensus:
    """Dawid & Skene (1979) EM: class priors and one confusion matrix per annotator.

    Starts from majority-vote soft counts; the M-step adds `smoothing` pseudo-counts to every
    confusion cell and prior; the E-step works in log space (hundreds of annotators on one item
    underflow a product of probabilities, as in Crowd-Kit). Stops when the log-likelihood changes
    by less than `tol` relative, or after `max_iter` iterations (converged=False).

    labels is the posterior argmax (-1 when the top two posteriors are within 1e-9 or the item
    has no votes), quality the top posterior, annotator_quality the expected accuracy
    sum_k prior_k * pi[a, k, k] (NaN for annotators without votes).

    Long on purpose: the steps above (distinct vote sets, incidence matrix, EM loop, decoding)
    share the EM state (posterior, prior, log_confusion) and are a few array expressions each;
    split, they would pass that state around without naming anything new.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if smoothing <= 0.0:
        raise ValueError(f"smoothing must be > 0, got {smoothing}")
    n_items, n_annotators, k = votes.n_items, votes.n_annotators, votes.n_labels
    counts = label_counts(votes)
    annotator_n = _annotator_n(votes)
    labels = np.full(n_items, -1, dtype=np.int64)
    quality = np.full(n_items, np.nan)
    annotator_quality = np.full(n_annotators, np.nan)
    voted = counts.sum(axis=1) > 0
    if not voted.any():
        return Consensus(labels, quality, annotator_quality, annotator_n)
    representatives, inverse = _distinct_vote_sets(votes, voted)
    multiplicity = np.bincount(inverse[voted], minlength=representatives.size).astype(np.float64)
    # One column per (annotator, given label): the E-step's per-item log-likelihood sum and the
    # M-step's confusion counts are then two sparse matrix products, with no loop over items.
    incidence = sparse.csr_matrix(
        (np.ones(votes.item.size), (votes.item, votes.annotator * k + votes.label)),
        shape=(n_items, n_annotators * k),
    )[representatives]
    incidence_t = incidence.T.tocsr()
    posterior = _initial_posteriors(counts[representatives], np.random.default_rng(seed))
    n_voted = float(multiplicity.sum())
    previous = -np.inf
    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        weighted = posterior * multiplicity[:, None]
        prior = (weighted.sum(axis=0) + smoothing) / (n_voted + k * smoothing)
        # given[a, l, c]: expected votes l by annotator a on items of true class c.
        given = np.asarray(incidence_t @ weighted).reshape(n_annotators, k, k) + smoothing
        log_confusion = np.log(given) - np.log(given.sum(axis=1, keepdims=True))
        log_joint = np.asarray(incidence @ log_confusion.reshape(n_annotators * k, k))
        posterior, log_evidence = _normalise_log_rows(log_joint + np.log(prior))
        likelihood = float(multiplicity @ log_evidence)
        if abs(likelihood - previous) <= tol * abs(likelihood):
            converged = True
            break
        previous = likelihood
    confusion_diagonal = np.exp(np.diagonal(log_confusion, axis1=1, axis2=2))  # (A, k): pi[a,c,c]
    rated = annotator_n > 0
    annotator_quality[rated] = confusion_diagonal[rated] @ prior
    ranked = np.sort(posterior, axis=1)
    clear = ranked[:, -1] - ranked[:, -2] > _POSTERIOR_TIE if k > 1 else np.ones(len(ranked), bool)
    winner = np.where(clear, np.argmax(posterior, axis=1), -1)
    labels[voted] = winner[inverse[voted]]
    quality[voted] = ranked[inverse[voted], -1]
    return Consensus(labels, quality, annotator_quality, annotator_n, converged, iterations)


def _check_pred_probs(pred_probs: np.ndarray, votes: Votes) -> np.ndarray:
    probs = np.asarray(pred_probs, dtype=np.float64)
    if probs.shape != (votes.n_items, votes.n_labels):
        raise ValueError(
            f"pred_probs must have shape {(votes.n_items, votes.n_labels)}, got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or (probs.size and probs.min() < 0.0):
        raise ValueError("pred_probs must be finite and non-negative")
    return probs


def _normalised(probs: np.ndarray) -> np.ndarray:
    total = probs.sum(axis=1, keepdims=True)
    uniform = np.full(probs.shape, 1.0 / probs.shape[1])
    out: np.ndarray = np.where(total > 0, probs / np.where(total > 0, total, 1.0), uniform)
    return out


def _dense_labels(
    votes: Votes, items: np.ndarray, annotators: np.ndarray, used: np.ndarray
) -> np.ndarray:
    """cleanlab's input: one row per labelled item, one column per annotator who labelled
    something, the cell the label's position among the `used` classes (NaN: no vote)."""
    item_pos = np.full(votes.n_items, -1, dtype=np.int64)
    item_pos[items] = np.arange(items.size)
    annotator_pos = np.full(votes.n_annotators, -1, dtype=np.int64)
    annotator_pos[annotators] = np.arange(annotators.size)
    class_pos = np.full(votes.n_labels, -1, dtype=np.int64)
    class_pos[used] = np.arange(used.size)
    dense = np.full((items.size, annotators.size), np.nan)
    dense[item_pos[votes.item], annotator_pos[votes.annotator]] = class_pos[votes.label]
    return dense


def crowdlab(votes: Votes, pred_probs: np.ndarray) -> Consensus:
    """CROWDLAB consensus (cleanlab.multiannotator) from the votes and out-of-fold model
    probabilities `pred_probs` (n_items, n_labels), columns in label-code order.

    cleanlab has no abstention and rejects items or annotators without labels, so it sees only
    the labelled items and the annotators who labelled something; the others get -1 / NaN.
    Its consensus is the argmax of a model-and-annotators posterior, so left alone it can pick
    a class no annotator ever used (a confident model outvotes a 2-1 split): only the classes
    some annotator used are offered, with pred_probs renormalised over them.

    CROWDLAB needs overlap to weigh annotators. Without it (no item has two labels) or with a
    single class in use, the consensus is the majority vote (the only label, for single-label
    items), quality is cleanlab's label quality score of that label under pred_probs (what
    cleanlab recommends for singly-labelled data) and annotator_quality is
    agreement_with_others (NaN without overlap). An annotator whose items nobody else labelled
    gets NaN from cleanlab itself.
    """
    # Imported on first use: docs/design.md, "Import weight".
    from cleanlab.multiannotator import get_label_quality_multiannotator

    probs = _check_pred_probs(pred_probs, votes)
    counts = label_counts(votes)
    annotator_n = _annotator_n(votes)
    m = counts.sum(axis=1)
    labels = np.full(votes.n_items, -1, dtype=np.int64)
    quality = np.full(votes.n_items, np.nan)
    annotator_quality = np.full(votes.n_annotators, np.nan)
    used = np.flatnonzero(counts.sum(axis=0) > 0)
    if used.size == 0:
        return Consensus(labels, quality, annotator_quality, annotator_n)
    items = np.flatnonzero(m > 0)
    if used.size < 2 or not np.any(m >= 2):
        return _singly_labelled_consensus(votes, counts, probs, items)
    annotators = np.flatnonzero(annotator_n > 0)
    dense = _dense_labels(votes, items, annotators, used)
    with warnings.catch_warnings():
        # Both are about the input, which the agreement statistics already report: annotators
        # who never agree, and majority-vote ties that pred_probs, class frequencies and
        # annotator agreement all fail to break (cleanlab then draws with numpy's global RNG,
        # seeded here; CROWDLAB's own consensus only falls back on that vote for exact ties).
        warnings.filterwarnings("ignore", message="Annotators do not agree on any example")
        warnings.filterwarnings("ignore", message="breaking ties of examples")
        with _seeded_global_rng(CROWDLAB_SEED):
            result = get_label_quality_multiannotator(
                dense,
                _normalised(probs[np.ix_(items, used)]),
                verbose=False,
                return_detailed_quality=False,
            )
    label_quality = result["label_quality"]
    labels[items] = used[label_quality["consensus_label"].to_numpy(dtype=np.int64)]
    quality[items] = label_quality["consensus_quality_score"].to_numpy(dtype=np.float64)
    stats = result["annotator_stats"].sort_index()
    annotator_quality[annotators] = stats["annotator_quality"].to_numpy(dtype=np.float64)
    return Consensus(labels, quality, annotator_quality, annotator_n)


def _singly_labelled_consensus(
    votes: Votes, counts: np.ndarray, probs: np.ndarray, items: np.ndarray
) -> Consensus:
    # Imported on first use: docs/design.md, "Import weight".
    from cleanlab.rank import get_label_quality_scores

    labels, _ = _plurality(counts)
    quality = np.full(votes.n_items, np.nan)
    decided = items[labels[items] >= 0]
    if decided.size:
        quality[decided] = get_label_quality_scores(labels[decided], _normalised(probs[decided]))
    rate, _ = agreement_with_others(votes, counts)
    return Consensus(labels, quality, rate, _annotator_n(votes))


# --- a model's probabilities, aligned to the items and labels being voted on --------------------

# Floor of every probability handed to CROWDLAB: a label the model does not know (or gives
# exactly 0) keeps a little mass, so the annotators can still win it.
PROBABILITY_FLOOR = 1e-6


def rows_by_item(
    item_ids: np.ndarray, row_item_ids: Sequence[int], rows: np.ndarray, *, n_columns: int
) -> np.ndarray:
    """(len(item_ids), n_columns) float64: each item's row of `rows` (rows[k] belongs to item
    row_item_ids[k]; each item at most once), NaN rows for items without one. Rows of items not
    in item_ids are ignored."""
    aligned = np.full((len(item_ids), n_columns), np.nan, dtype=np.float64)
    wanted = np.asarray(item_ids, dtype=np.int64)
    given = np.asarray(row_item_ids, dtype=np.int64)
    if wanted.size == 0 or given.size == 0:
        return aligned
    order = np.argsort(wanted, kind="stable")
    ranked = wanted[order]
    slot = np.minimum(np.searchsorted(ranked, given), ranked.size - 1)
    found = ranked[slot] == given
    aligned[order[slot[found]]] = np.asarray(rows)[found]
    return aligned


def label_columns(
    probabilities: np.ndarray, *, model_labels: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """(n, len(labels)) rows summing to 1: a model's probabilities (columns in model_labels
    order) moved to the columns of `labels`, for CROWDLAB.

    A label the model does not know gets only the floor (PROBABILITY_FLOOR) before
    renormalising; model labels that are not in `labels` are dropped. A row with a NaN in a
    kept column (an item the model could not read) carries no evidence and becomes uniform.
    """
    column = {label: i for i, label in enumerate(labels)}
    moved = np.zeros((probabilities.shape[0], len(labels)), dtype=np.float64)
    for model_column, label in enumerate(model_labels):
        project_column = column.get(label)
        if project_column is not None:
            moved[:, project_column] = probabilities[:, model_column]
    moved[np.isnan(moved).any(axis=1)] = 1.0 / len(labels)
    moved = np.maximum(moved, PROBABILITY_FLOOR)
    normalised: np.ndarray = moved / moved.sum(axis=1, keepdims=True)
    return normalised
