"""Server CPU per request, one request at a time: what a request costs the server process,
without the queueing of bench/load.py. Compares source trees in one run (A/B), so machine
noise cancels out of the ratio.

Setup (not timed): a fresh PostgreSQL database, 100,000 unlabeled items (the Debian
descriptions cycled), 10 annotator keys, and one `labelwise serve` process per --tree (the
checkout by default; give the previous commit's tree, e.g. from `git worktree add`, to
compare). The trees share the database, so their schemas must match.

Each round, for each tree in turn: GET the project, POST .../batches {size: 20, strategy:
random}, POST .../annotations answering the batch. Reported per tree and request kind: the
server process's CPU time (user + system, from /proc) per request, and the wall time the
client saw, over --rounds rounds after 20 unmeasured ones.

With --retrain N, a second project is measured the same way in every round: its first N
items labeled and a model trained on them and active, and retrain_after_labels set (too high
to trigger), so every answer checks whether to retrain. Its rows should match the first
project's: an answer must not read the model's training set.

    .venv/bin/python bench/request_cost.py [--tree PATH ...] [--rounds 300] [--retrain 50000]
"""

import argparse
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    REPO,
    BenchError,
    Database,
    Source,
    code_version,
    cpu_seconds,
    expect,
    expect_batch,
    find_debian_data,
    load_sources,
    load_unlabeled_items,
    machine,
    running_server,
    served_postgres,
    table,
)

ADMIN_KEY = "lw_" + "c" * 43
KINDS = ("GET project", "POST batches", "POST annotations")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", help="a source tree (repeatable)")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--retrain",
        type=int,
        default=0,
        metavar="N",
        help="also measure a second project with retrain_after_labels set and an active model "
        "trained on N labeled items (its training set is N ids and labels)",
    )
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [REPO])]
    path = find_debian_data()
    if path is None:
        return 2
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    with served_postgres(args.postgres_url, "labelwise_bench_request_cost", ADMIN_KEY) as served:
        database, env = served
        with ExitStack() as stack:
            servers = [
                stack.enter_context(running_server(env, database.workdir / f"server-{n}.log", tree))
                for n, tree in enumerate(trees)
            ]
            clients = [httpx.Client(base_url=s.url, timeout=120) for s in servers]
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            projects = {"plain": make_project(clients[0], database, sources, labels, args.items, 1)}
            if args.retrain:
                projects["retrain"] = make_project(
                    clients[0], database, sources, labels, args.items, args.items + 1
                )
                train_and_retrain(clients[0], projects["retrain"], sources, args.retrain)
            keys = []
            for n in range(10):
                key = {"name": f"cost-{n}", "role": "annotator"}
                keys.append(
                    expect(clients[0].post("/v1/api-keys", json=key, headers=admin), 201, "key")[
                        "key"
                    ]
                )
            rng = random.Random(0)
            totals = [
                {(name, kind): [0.0, 0.0] for name in projects for kind in KINDS} for _ in trees
            ]

            def one_round(n: int, round_: int, measured: bool) -> None:
                client, pid = clients[n], servers[n].process.pid
                headers = {"Authorization": f"Bearer {keys[round_ % len(keys)]}"}
                for name, project_id in projects.items():
                    base = f"/v1/projects/{project_id}"
                    steps = []
                    for kind in KINDS:
                        cpu, wall = cpu_seconds(pid), time.perf_counter()
                        if kind == "GET project":
                            response = client.get(base, headers=headers)
                        elif kind == "POST batches":
                            response = client.post(
                                f"{base}/batches",
                                json={"size": 20, "strategy": "random"},
                                headers=headers,
                            )
                            batch = expect_batch(response, "a batch")
                        else:
                            answers = [
                                {"item_id": i["item"]["id"], "label": rng.choice(labels)}
                                for i in batch["items"]
                            ]
                            response = client.post(
                                f"{base}/annotations", json=answers, headers=headers
                            )
                            expect(response, 200, "annotations")
                        steps.append((kind, cpu_seconds(pid) - cpu, time.perf_counter() - wall))
                    if measured:
                        for kind, cpu, wall in steps:
                            totals[n][name, kind][0] += cpu
                            totals[n][name, kind][1] += wall

            for round_ in range(20 + args.rounds):
                for n in range(len(trees)):
                    one_round(n, round_, measured=round_ >= 20)
    print(
        f"code {code_version()}, {machine()}; "
        f"{args.rounds} rounds, PostgreSQL, {args.items:,} items"
        + (f"; retrain project: model trained on {args.retrain:,} labels" if args.retrain else "")
    )
    rows = []
    for tree, total in zip(trees, totals, strict=True):
        for name in projects:
            for kind in KINDS:
                cpu, wall = total[name, kind]
                rows.append(
                    [
                        str(tree),
                        name,
                        kind,
                        f"{1000 * cpu / args.rounds:.2f}",
                        f"{1000 * wall / args.rounds:.2f}",
                    ]
                )
    print("\n".join(table(["tree", "project", "request", "server CPU ms", "wall ms"], rows)))
    return 0


def make_project(
    client: httpx.Client,
    database: Database,
    sources: list[Source],
    labels: list[str],
    count: int,
    first_id: int,
) -> int:
    """A production project with `count` unlabeled items (ids from `first_id`): its id."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"name": f"request-cost-{first_id}", "labels": labels, "phase": "production"}
    project = expect(client.post("/v1/projects", json=body, headers=admin), 201, "project")
    load_unlabeled_items(database, sources, count, project["id"], first_id)
    return int(project["id"])


def train_and_retrain(
    client: httpx.Client, project_id: int, sources: list[Source], labeled: int
) -> None:
    """Label the project's first `labeled` items with their Debian sections (in one
    annotator's name), train and activate a model on them, then set retrain_after_labels so
    high that no answer of the run starts a training: every answer still checks it."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    base = f"/v1/projects/{project_id}"
    first_id = int(client.get(f"{base}/items?limit=1", headers=admin).json()["items"][0]["id"])
    for start in range(0, labeled, 5000):
        answers = [
            {
                "item_id": first_id + position,
                "label": sources[position % len(sources)].label,
                "annotator": "seed",
            }
            for position in range(start, min(labeled, start + 5000))
        ]
        expect(client.post(f"{base}/annotations", json=answers, headers=admin), 200, "labels")
    job = expect(
        client.post(f"{base}/models", json={"activate": True}, headers=admin), 202, "training"
    )
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        job = expect(client.get(f"/v1/jobs/{job['id']}", headers=admin), 200, "the job")
    if job["status"] != "succeeded":
        raise BenchError(f"training failed: {job['error']}")
    patch = {"retrain_after_labels": 10_000_000}
    expect(client.patch(base, json=patch, headers=admin), 200, "retrain_after_labels")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
