"""A small synthetic three-topic corpus, separable but not trivially, for registry tests."""

import random

TOPICS = {
    "sports": "match goal team score league coach player season stadium referee win",
    "cooking": "recipe oven flour sugar bake simmer garlic onion sauce butter taste",
    "tech": "server kernel compile python database network cloud debug memory code",
}
SHARED = "the a today new great really about with some very and for".split()  # noqa: SIM905


def topic_texts(label: str, count: int, *, seed: int) -> list[str]:
    rng = random.Random(f"{label}-{seed}")
    words = TOPICS[label].split()
    return [
        " ".join(rng.choice(words if rng.random() < 0.5 else SHARED) for _ in range(12))
        + f" #{seed}-{i}"
        for i in range(count)
    ]


def labeled_corpus(per_label: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) pairs, per_label of each topic, interleaved."""
    columns = [[(t, label) for t in topic_texts(label, per_label, seed=seed)] for label in TOPICS]
    return [pair for row in zip(*columns, strict=True) for pair in row]
