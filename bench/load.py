"""Load test: --annotators simulated annotators (50) for --seconds (60) against two
`labelwise serve` processes on one PostgreSQL database, each looping "fetch a batch, answer
it" over HTTP from one asyncio driver (httpx.AsyncClient), loopback only.

Setup (not timed): a production project with --items unlabeled items (100,000; bulk-loaded,
the Debian descriptions cycled), one annotator key per simulated annotator, both servers
started. Each annotator talks to one server (alternating), asks for a batch of --batch-size
(20, --strategy random: the project has no model, and what choosing by a model costs is
bench/batches.py's) and answers every item with a random label in one POST .../annotations,
after the time a person takes (--pace items per second). Annotators start at random moments
of their first cycle, and the first --warmup seconds (10) are run but not measured.

Reported: answers per second and p50/p99 latency per request kind over the measured
--seconds, errors (any non-2xx or transport error, warm-up included), and the CPU time the
servers, PostgreSQL and the driver used per answer (from /proc). --contend N runs N
busy-looping processes beside the load: a noisy neighbour, for the headroom. Checked after the
run, in the database: every acknowledged answer is stored (per annotator, the current
human annotations equal the answers the server acknowledged as created), and no item has
more answers than annotators_per_item. Target from the issue: >= 500 answers/s sustained
with p99 < 250 ms and zero errors. The short form runs in the test suite
(tests/e2e/test_load.py) through `run_load` and `check_stored`.

    .venv/bin/python bench/load.py [--annotators 50] [--seconds 60] [--warmup 10] [--pace 12]
                                   [--overlap 2] [--contend 0]
"""

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "lw_" + "l" * 43
TARGET_PER_SECOND = 500
TARGET_P99_MS = 250.0


@dataclass
class LoadResult:
    seconds: float = 0.0  # measured, after the warm-up
    measure_from: float = 0.0  # time.perf_counter() when the warm-up ended
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"batch": [], "annotations": []}
    )
    acknowledged: Counter[str] = field(default_factory=Counter)  # answers created, by annotator
    measured: int = 0  # answers created by requests started after the warm-up
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used while measuring

    @property
    def answers(self) -> int:
        return sum(self.acknowledged.values())

    def record(self, kind: str, started: float) -> None:
        if started >= self.measure_from:
            self.latencies[kind].append(time.perf_counter() - started)

    def percentile_ms(self, kind: str, q: float) -> float:
        values = sorted(self.latencies[kind])
        if not values:
            return float("nan")
        return 1000 * values[min(len(values) - 1, int(q * len(values)))]


async def _annotator(
    client: httpx.AsyncClient,
    name: str,
    project_id: int,
    labels: list[str],
    batch_size: int,
    strategy: str,
    pace: float,
    stop_at: float,
    result: LoadResult,
) -> None:
    rng = random.Random(name)
    base = f"/v1/projects/{project_id}"
    # People do not all click at the same instant: each starts somewhere in its first cycle.
    await asyncio.sleep(rng.uniform(0, batch_size / pace if pace else 0.5))
    while time.monotonic() < stop_at:
        try:
            started = time.perf_counter()
            response = await client.post(
                f"{base}/batches", json={"size": batch_size, "strategy": strategy}
            )
            result.record("batch", started)
            if response.status_code not in (200, 201):  # 200: nothing to hand out now
                result.errors.append(f"batch {response.status_code}: {response.text[:200]}")
                return
            items = response.json()["items"]
            if not items:
                await asyncio.sleep(0.05)
                continue
            answers = [{"item_id": i["item"]["id"], "label": rng.choice(labels)} for i in items]
            if pace:  # a person takes time to label: len(items) / pace seconds
                await asyncio.sleep(len(items) / pace)
            started = time.perf_counter()
            response = await client.post(f"{base}/annotations", json=answers)
            result.record("annotations", started)
            if response.status_code != 200:
                result.errors.append(f"annotations {response.status_code}: {response.text[:200]}")
                return
            created = response.json()["created"]
            result.acknowledged[name] += created
            if started >= result.measure_from:
                result.measured += created
        except httpx.HTTPError as error:
            result.errors.append(f"{type(error).__name__}: {error}")
            return


async def _run(
    urls: list[str],
    keys: dict[str, str],
    project_id: int,
    labels: list[str],
    seconds: float,
    batch_size: int,
    strategy: str,
    pace: float,
    warmup: float,
    cpu: Callable[[], dict[str, float]] | None,
) -> LoadResult:
    result = LoadResult(measure_from=time.perf_counter() + warmup)
    at_start: dict[str, float] = {}

    async def sample_cpu() -> None:
        if cpu is not None:
            await asyncio.sleep(warmup)
            at_start.update(cpu())

    limits = httpx.Limits(max_connections=len(keys), max_keepalive_connections=len(keys))
    clients = [
        httpx.AsyncClient(
            base_url=urls[n % len(urls)],
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            limits=limits,
        )
        for n, key in enumerate(keys.values())
    ]
    started = time.monotonic()
    try:
        await asyncio.gather(
            sample_cpu(),
            *(
                _annotator(
                    client,
                    name,
                    project_id,
                    labels,
                    batch_size,
                    strategy,
                    pace,
                    started + warmup + seconds,
                    result,
                )
                for client, name in zip(clients, keys, strict=True)
            ),
        )
    finally:
        for client in clients:
            await client.aclose()
    result.seconds = time.perf_counter() - result.measure_from
    if cpu is not None:
        result.cpu = {name: used - at_start[name] for name, used in cpu().items()}
    return result


def run_load(
    urls: list[str],
    keys: dict[str, str],
    project_id: int,
    labels: list[str],
    *,
    seconds: float,
    batch_size: int = 20,
    strategy: str = "random",
    pace: float = 0.0,
    warmup: float = 0.0,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> LoadResult:
    """Every annotator in `keys` (name -> secret) fetches and answers batches for `warmup` +
    `seconds`, labeling `pace` items per second (0: answering at once, as fast as the server
    allows). Latencies and the measured answers count from the end of the warm-up, and so
    does the CPU `cpu` reports (seconds used so far, by name) when given."""
    return asyncio.run(
        _run(urls, keys, project_id, labels, seconds, batch_size, strategy, pace, warmup, cpu)
    )


def check_stored(database_url: str, project_id: int, result: LoadResult) -> list[str]:
    """What the database disagrees with: acknowledged answers not stored, items over their
    overlap. An empty list is a pass."""
    problems = []
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        stored: dict[str, int] = dict(
            connection.execute(
                sa.text(
                    "SELECT annotator, count(*) FROM annotation WHERE project_id = :p"
                    " AND is_current AND source = 'human' GROUP BY annotator"
                ),
                {"p": project_id},
            ).all()
        )
        overlap = connection.execute(
            sa.text("SELECT annotators_per_item FROM project WHERE id = :p"), {"p": project_id}
        ).scalar_one()
        over = connection.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT item_id FROM annotation WHERE project_id = :p"
                " AND is_current AND source = 'human' GROUP BY item_id"
                " HAVING count(*) > :n) AS over"
            ),
            {"p": project_id, "n": overlap},
        ).scalar_one()
    engine.dispose()
    for name, count in result.acknowledged.items():
        if stored.get(name, 0) != count:
            problems.append(f"{name}: {count} acknowledged, {stored.get(name, 0)} stored")
    if over:
        problems.append(f"{over} items have more than {overlap} answers")
    return problems


# --- the benchmark -------------------------------------------------------------------------------


def main() -> int:
    from common import (
        BenchError,
        code_version,
        cpu_seconds,
        expect,
        find_debian_data,
        load_average,
        load_sources,
        load_unlabeled_items,
        machine,
        postgres_cpu_seconds,
        running_server,
        served_postgres,
        table,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--strategy",
        default="random",
        help="batch strategy (random: no model in this project; the cost of choosing by a "
        "model is bench/batches.py's)",
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=12.0,
        help="items each annotator labels per second (50 x 12 = 600 offered per second); "
        "0 answers at once: the saturation throughput, where latency is the queue",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=2,
        help="annotators per item: an item is handed to several annotators, never more",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds run before measuring: both servers' first statements, connections and "
        "caches (the first seconds' latencies were 4-5 times the steady state's)",
    )
    parser.add_argument(
        "--contend",
        type=int,
        default=0,
        help="busy-looping processes run beside the load for its whole length: a noisy "
        "neighbour taking CPU, to see how much slower a machine can be before p99 misses",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()

    path = find_debian_data()
    if path is None:
        return 2
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    try:
        with served_postgres(args.postgres_url, "labelwise_bench_load", ADMIN_KEY) as served:
            database, env = served
            with (
                running_server(env, database.workdir / "server-0.log") as first,
                running_server(env, database.workdir / "server-1.log") as second,
                httpx.Client(
                    base_url=first.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
                ) as admin,
            ):
                body = {
                    "name": "bench-load",
                    "labels": labels,
                    "phase": "production",
                    "annotators_per_item": args.overlap,
                }
                project = expect(admin.post("/v1/projects", json=body), 201, "creating the project")
                load_unlabeled_items(database, sources, args.items, project["id"])
                keys = {}
                for n in range(args.annotators):
                    name = f"annotator-{n:02d}"
                    key = {"name": name, "role": "annotator"}
                    keys[name] = expect(admin.post("/v1/api-keys", json=key), 201, "a key")["key"]

                def cpu() -> dict[str, float]:
                    return {
                        "servers": sum(cpu_seconds(s.process.pid) for s in (first, second)),
                        "PostgreSQL": postgres_cpu_seconds(),
                        "driver": sum(os.times()[:2]),
                    }

                before = load_average()
                hogs = [
                    subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(args.contend)
                ]
                try:
                    result = run_load(
                        [first.url, second.url],
                        keys,
                        project["id"],
                        labels,
                        seconds=args.seconds,
                        batch_size=args.batch_size,
                        strategy=args.strategy,
                        pace=args.pace,
                        warmup=args.warmup,
                        cpu=cpu,
                    )
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
                after = load_average()
            problems = check_stored(database.url, project["id"], result)
    except BenchError as error:
        print(error, file=sys.stderr)
        return 1

    rate = result.measured / result.seconds
    requests = sum(len(v) for v in result.latencies.values())
    print(f"code {code_version()}, {machine()}")
    print(
        f"{args.annotators} annotators, {args.seconds:.0f} s measured after a {args.warmup:g} s "
        f"warm-up, 2 server processes, PostgreSQL, {args.overlap} annotators per item, "
        f"{args.items:,} items, batches of {args.batch_size}, pace {args.pace:g} items/s per "
        f"annotator, {args.contend} CPU hogs beside it; load {before}-{after}"
    )
    header = ["request", "count", "p50 ms", "p99 ms"]
    lines = [
        [
            kind,
            f"{len(values):,}",
            f"{result.percentile_ms(kind, 0.5):.1f}",
            f"{result.percentile_ms(kind, 0.99):.1f}",
        ]
        for kind, values in result.latencies.items()
    ]
    print("\n".join(table(header, lines)))
    print(
        f"answers in the measured {result.seconds:.1f} s: {result.measured:,} = {rate:,.0f}/s "
        f"({result.answers:,} with the warm-up, all checked below); "
        f"requests {requests / result.seconds:,.0f}/s; errors {len(result.errors)}"
    )
    if result.measured:
        used = ", ".join(
            f"{name} {1000 * seconds / result.measured:.2f} ms "
            f"({seconds / result.seconds:.2f} CPUs)"
            for name, seconds in result.cpu.items()
        )
        print(f"CPU per answer: {used}")
    for message in result.errors[:5]:
        print(f"  error: {message}")
    for problem in problems:
        print(f"  check: {problem}")
    p99 = max(result.percentile_ms(kind, 0.99) for kind in result.latencies)
    verdicts = [
        (not result.errors, f"zero errors ({len(result.errors)})"),
        (not problems, "every acknowledged answer stored, no item over its overlap"),
        (rate >= TARGET_PER_SECOND, f"{rate:,.0f} answers/s (target >= {TARGET_PER_SECOND})"),
        (p99 < TARGET_P99_MS, f"p99 {p99:.0f} ms (target < {TARGET_P99_MS:.0f} ms)"),
    ]
    for ok, what in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
