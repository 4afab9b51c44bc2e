"""A team on the embedded default: simulated annotators using the web app against one
`labelwise serve` process, on SQLite and on PostgreSQL, old source tree against new in one run.

Setup per scenario and source tree (not timed): a fresh database (a SQLite file, or a
throwaway PostgreSQL database), migrated; one `labelwise serve` process of that tree on it
(one process, as SQLite is served; LABELWISE_LOG_LEVEL=INFO, so the request log has every
request's server time); a production project with --items unlabeled items (50,000; the Debian
descriptions cycled, bulk-loaded, annotators_per_item --overlap, 1 by default); fresh
annotator keys for every leg, so one leg's leases never reach the next.

The simulated annotator does what the web app does (issue 22):
* it keeps a batch leased ahead: POST .../batches {size: --batch-size (20), strategy:
  random}, and a new one in the background whenever fewer than --ahead (5) items are left
  and no fetch is in flight;
* it shows an item, takes a think time drawn uniformly from --think (0.5:1.5 s) to decide,
  and presses the key: the answer goes to an outbox, and the next item is shown at once if
  one is leased (else as soon as the fetch in flight brings one);
* the outbox sends the answers in the background, one per request ([{item_id, label}] to
  POST .../annotations), one request at a time and in the order they were given, as the app
  does (an answer never overtakes an earlier one);
* with --think 0 ("closed loop", the stress case) it presses the next key only once the
  previous answer is acknowledged: --annotators writers back to back, one answer per request.
Annotators start at random moments of their first think time. Every request carries its own
X-Request-ID, which the server's request log echoes with its duration.

Measured per leg: --warmup (5) s run, then --seconds (60) s measured; keypresses after that
stop, and the outboxes are drained. Legs alternate between the trees in the order A B B A
(--legs 2 per tree), so drift over the run cancels. Per scenario and tree, over the measured
keypresses:
* keypress -> next item answerable: from the keypress that sends an answer to the moment the
  next item can be answered (0 when a leased item is waiting; the wait for the batch fetch
  when the buffer ran dry);
* keypress -> answer acknowledged: outbox wait plus the request;
* the answer request as the client saw it, and as the server timed it (duration_ms of its
  request log line: from the request reaching the app to the response's end);
* the batch request, server time; answers per second; errors (any non-2xx or transport
  error); answers lost: sent but not acknowledged, or acknowledged but not stored (per
  annotator, its current human annotations in the database against its acknowledged answers).
Also the machine: the load average before and after each leg and the share of both CPUs
that was busy during the measured part (/proc/stat, everything on the machine), and the CPU
the server and this driver used.

Scenarios (--scenario, all by default, in this order): `sqlite-8-closed` (8 annotators, think
0), `sqlite-8` (8 annotators, think --think), `sqlite-20` (20), `postgres-20` (20, PostgreSQL).
Targets (issue 22), on `sqlite-20` with the new tree: keypress -> next item answerable p95
< 100 ms, server p99 per answer request < 150 ms, zero lost answers.

    git worktree add ../sqlite-baseline merge21
    .venv/bin/python bench/team.py --tree ../sqlite-baseline --tree . [--scenario sqlite-20]
                                   [--seconds 60] [--warmup 5] [--legs 2] [--out report.md]
"""

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    REPO,
    BenchError,
    Server,
    Source,
    code_version,
    cpu_seconds,
    expect,
    find_debian_data,
    fresh_database,
    load_average,
    load_sources,
    load_unlabeled_items,
    machine,
    postgres_version,
    progress,
    running_server,
    service_env,
    table,
    write_report,
)

from app.migrations import upgrade  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "lw_" + "t" * 43
BROWSER_CONNECTIONS = 6  # a browser's connections per origin (HTTP/1.1)
TARGET_NEXT_P95_MS = 100.0
TARGET_SERVER_P99_MS = 150.0
TARGET_SCENARIO = "sqlite-20"


@dataclass(frozen=True)
class Scenario:
    name: str
    backend: str
    annotators: int
    closed: bool  # think time 0: the next key only once the previous answer is acknowledged


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("sqlite-8-closed", "sqlite", 8, True),
        Scenario("sqlite-8", "sqlite", 8, False),
        Scenario("sqlite-20", "sqlite", 20, False),
        Scenario("postgres-20", "postgres", 20, False),
    )
}


@dataclass
class Leg:
    """What one leg measured; request ids are joined with the server's log afterwards."""

    measure_from: float
    measure_to: float
    next_item: list[float] = field(default_factory=list)  # keypress -> next item answerable
    acknowledged_after: list[float] = field(default_factory=list)  # keypress -> acknowledged
    answer_client: list[float] = field(default_factory=list)  # request as the client saw it
    answer_ids: list[str] = field(default_factory=list)  # X-Request-ID of measured answers
    batch_ids: list[str] = field(default_factory=list)
    answered: int = 0  # measured answers acknowledged
    given: Counter[str] = field(default_factory=Counter)  # keypresses (answers), by annotator
    acknowledged: Counter[str] = field(default_factory=Counter)  # answers created, by annotator
    errors: list[str] = field(default_factory=list)
    duplicates: int = 0  # items handed to the same annotator twice
    dry: int = 0  # measured keypresses that found no leased item waiting
    busy_share: float = 0.0  # of all CPUs on the machine, during the measured part
    load: tuple[float, float] = (0.0, 0.0)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds during the whole leg

    def measured(self, at: float) -> bool:
        return self.measure_from <= at < self.measure_to


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class Annotator:
    """One simulated person in the web app (see the module docstring)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        name: str,
        base: str,
        labels: list[str],
        args: argparse.Namespace,
        closed: bool,
        leg: Leg,
        stop_at: float,
    ) -> None:
        self.client, self.name, self.base, self.labels = client, name, base, labels
        self.args, self.closed, self.leg, self.stop_at = args, closed, leg, stop_at
        self.rng = random.Random(name)
        self.buffer: deque[int] = deque()
        self.seen: set[int] = set()
        self.fetch: asyncio.Task[None] | None = None
        self.outbox: asyncio.Queue[tuple[int, str, float]] = asyncio.Queue()
        self.requests = 0
        self.failed = False
        self.empty = False  # the last fetch brought no new item

    def request_id(self) -> str:
        self.requests += 1
        return f"{self.name}.{self.requests}"

    async def fetch_batch(self) -> None:
        """One POST .../batches; its new items join the buffer (`empty` when there were none)."""
        request_id = self.request_id()
        started = time.perf_counter()
        self.empty = True
        try:
            response = await self.client.post(
                f"{self.base}/batches",
                json={"size": self.args.batch_size, "strategy": "random"},
                headers={"x-request-id": request_id},
            )
        except httpx.HTTPError as error:
            self.fail(f"batch: {type(error).__name__}: {error}")
            return
        if self.leg.measured(started):
            self.leg.batch_ids.append(request_id)
        if response.status_code not in (200, 201):
            self.fail(f"batch {response.status_code}: {response.text[:200]}")
            return
        for entry in response.json()["items"]:
            item_id = int(entry["item"]["id"])
            if item_id in self.seen:
                self.leg.duplicates += 1
                continue
            self.seen.add(item_id)
            self.buffer.append(item_id)
            self.empty = False

    def fail(self, message: str) -> None:
        self.leg.errors.append(f"{self.name}: {message}")
        self.failed = True

    def fetch_if_low(self) -> None:
        if len(self.buffer) < self.args.ahead and (self.fetch is None or self.fetch.done()):
            self.fetch = asyncio.create_task(self.fetch_batch())

    async def next_item(self) -> int | None:
        """The next leased item, waiting for fetches while none is; None once failed or over."""
        while not self.buffer:
            if self.failed or time.perf_counter() >= self.stop_at:
                return None
            if self.fetch is None or self.fetch.done():
                if self.empty:
                    await asyncio.sleep(0.2)  # the pool had nothing: ask again shortly
                self.fetch = asyncio.create_task(self.fetch_batch())
            await asyncio.shield(self.fetch)
        return self.buffer.popleft()

    async def send_answers(self) -> None:
        while True:
            item_id, label, pressed = await self.outbox.get()
            try:
                await self.send(item_id, label, pressed)
            except Exception as error:  # a bench bug must not leave the outbox undrained
                self.fail(f"sending: {type(error).__name__}: {error}")
            finally:
                self.outbox.task_done()

    async def send(self, item_id: int, label: str, pressed: float) -> None:
        request_id = self.request_id()
        measured = self.leg.measured(pressed)
        started = time.perf_counter()
        try:
            response = await self.client.post(
                f"{self.base}/annotations",
                json=[{"item_id": item_id, "label": label}],
                headers={"x-request-id": request_id},
            )
        except httpx.HTTPError as error:
            self.fail(f"annotations: {type(error).__name__}: {error}")
            return
        done = time.perf_counter()
        if response.status_code != 200:
            self.fail(f"annotations {response.status_code}: {response.text[:200]}")
            return
        created = int(response.json()["created"])
        self.leg.acknowledged[self.name] += created
        if created != 1:
            self.fail(f"answer to item {item_id}: created {created}, not 1")
        if measured:
            self.leg.answered += created
            self.leg.answer_ids.append(request_id)
            self.leg.answer_client.append(done - started)
            self.leg.acknowledged_after.append(done - pressed)

    async def run(self) -> None:
        sender = asyncio.create_task(self.send_answers())
        think_low, think_high = self.args.think
        try:
            # The first page load: its batch is not a keypress's wait.
            item = await self.next_item()
            await asyncio.sleep(self.rng.uniform(0, think_high or 0.5))
            while item is not None and not self.failed:
                self.fetch_if_low()
                if self.closed:
                    await self.outbox.join()
                else:
                    await asyncio.sleep(self.rng.uniform(think_low, think_high))
                pressed = time.perf_counter()
                if pressed >= self.stop_at:
                    break
                self.outbox.put_nowait((item, self.rng.choice(self.labels), pressed))
                self.leg.given[self.name] += 1
                item = await self.next_item()
                if item is not None and self.leg.measured(pressed):
                    waited = time.perf_counter() - pressed
                    self.leg.next_item.append(waited)
                    if waited > 0.001:
                        self.leg.dry += 1
            await self.outbox.join()
        finally:
            sender.cancel()
            if self.fetch is not None:
                self.fetch.cancel()


async def run_leg(
    url: str,
    keys: dict[str, str],
    project_id: int,
    labels: list[str],
    args: argparse.Namespace,
    closed: bool,
) -> Leg:
    start = time.perf_counter()
    leg = Leg(measure_from=start + args.warmup, measure_to=start + args.warmup + args.seconds)
    limits = httpx.Limits(
        max_connections=BROWSER_CONNECTIONS, max_keepalive_connections=BROWSER_CONNECTIONS
    )
    async with asyncio.TaskGroup() as group:
        clients = []
        for name, key in keys.items():
            client = httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
            )
            clients.append(client)
            annotator = Annotator(
                client,
                name,
                f"/v1/projects/{project_id}",
                labels,
                args,
                closed,
                leg,
                leg.measure_to,
            )
            group.create_task(annotator.run())

        async def sample_machine() -> None:
            await asyncio.sleep(max(0.0, leg.measure_from - time.perf_counter()))
            busy, total = cpu_ticks()
            await asyncio.sleep(max(0.0, leg.measure_to - time.perf_counter()))
            busy_after, total_after = cpu_ticks()
            leg.busy_share = (busy_after - busy) / max(1, total_after - total)

        group.create_task(sample_machine())
    for client in clients:
        await client.aclose()
    return leg


def server_durations(server: Server) -> dict[str, float]:
    """request_id -> duration in seconds, from the server's request log lines."""
    durations = {}
    for line in server.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("msg") == "request" and "request_id" in record:
            durations[record["request_id"]] = float(record["duration_ms"]) / 1000
    return durations


@dataclass
class Setup:
    """One tree's server on its own fresh database, with a project to annotate."""

    tree: Path
    server: Server
    admin: httpx.Client
    database_url: str
    project_id: int
    legs: list[Leg] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)  # request id -> server seconds
    problems: list[str] = field(default_factory=list)
    lost: int = 0  # answers given (keypresses) that are not stored


@contextmanager
def prepared(
    scenario: Scenario,
    tree: Path,
    n: int,
    sources: list[Source],
    labels: list[str],
    args: argparse.Namespace,
) -> Iterator[Setup]:
    name = f"labelwise_bench_team_{n}"
    with fresh_database(scenario.backend, args.postgres_url, name) as database:
        if database is None:
            raise BenchError(f"{scenario.name}: PostgreSQL is unreachable")
        upgrade(database.url)
        env = service_env(
            database.url, database.workdir, bootstrap_admin_key=ADMIN_KEY, log_level="INFO"
        )
        log = database.workdir / f"server-{n}.log"
        with (
            running_server(env, log, None if tree == REPO else tree) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
            ) as admin,
        ):
            body = {
                "name": f"team-{scenario.name}",
                "labels": labels,
                "phase": "production",
                "annotators_per_item": args.overlap,
            }
            project = expect(admin.post("/v1/projects", json=body), 201, "creating the project")
            load_unlabeled_items(database, sources, args.items, project["id"])
            yield Setup(tree, server, admin, database.url, int(project["id"]))


def leg_keys(setup: Setup, scenario: Scenario, leg: int) -> dict[str, str]:
    keys = {}
    for n in range(scenario.annotators):
        name = f"{scenario.name}-leg{leg}-annotator-{n:02d}"
        body = {"name": name, "role": "annotator"}
        keys[name] = expect(setup.admin.post("/v1/api-keys", json=body), 201, "a key")["key"]
    return keys


def run_scenario(
    scenario: Scenario,
    trees: list[Path],
    sources: list[Source],
    labels: list[str],
    args: argparse.Namespace,
) -> list[Setup]:
    """Every tree's legs of one scenario, A B B A ...: each tree's setup, measured and checked."""
    results = []
    with ExitStack() as stack:
        setups = [
            stack.enter_context(prepared(scenario, tree, n, sources, labels, args))
            for n, tree in enumerate(trees)
        ]
        order = []
        for round_ in range(args.legs):
            order += setups if round_ % 2 == 0 else setups[::-1]
        for number, setup in enumerate(order):
            keys = leg_keys(setup, scenario, number)
            before = load_average()
            pid = setup.server.process.pid
            cpu_before = (cpu_seconds(pid), sum(os.times()[:2]))
            leg = asyncio.run(
                run_leg(setup.server.url, keys, setup.project_id, labels, args, scenario.closed)
            )
            leg.cpu = {
                "server": cpu_seconds(pid) - cpu_before[0],
                "driver": sum(os.times()[:2]) - cpu_before[1],
            }
            leg.load = (before, load_average())
            setup.legs.append(leg)
            progress(
                f"{scenario.name} {label_of(setup.tree, trees)} leg {number + 1}/{len(order)}: "
                f"{leg.answered} answers, {len(leg.errors)} errors, "
                f"load {leg.load[0]:.2f}-{leg.load[1]:.2f}"
            )
        for setup in setups:
            setup.durations = server_durations(setup.server)
            setup.problems = stored_problems(setup)
            results.append(setup)
    return results


def stored_problems(setup: Setup) -> list[str]:
    """What the database disagrees with, and `setup.lost`: per annotator, the answers given
    (keypresses) against those acknowledged and its current human annotations stored; items
    over their overlap; measured requests missing from the server's log. Empty is a pass."""
    given, acknowledged = Counter[str](), Counter[str]()
    for leg in setup.legs:
        given.update(leg.given)
        acknowledged.update(leg.acknowledged)
    engine = sa.create_engine(setup.database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            stored: dict[str, int] = {
                name: count
                for name, count in connection.execute(
                    sa.text(
                        "SELECT annotator, count(*) FROM annotation WHERE project_id = :p"
                        " AND is_current AND source = 'human' GROUP BY annotator"
                    ),
                    {"p": setup.project_id},
                )
            }
            over = connection.execute(
                sa.text(
                    "SELECT count(*) FROM (SELECT item_id FROM annotation WHERE project_id = :p"
                    " AND is_current AND source = 'human' GROUP BY item_id HAVING count(*) >"
                    " (SELECT annotators_per_item FROM project WHERE id = :p)) AS over"
                ),
                {"p": setup.project_id},
            ).scalar_one()
    finally:
        engine.dispose()
    setup.lost = sum(max(0, count - stored.get(name, 0)) for name, count in given.items())
    problems = [
        f"{name}: {count} answers given, {acknowledged[name]} acknowledged, "
        f"{stored.get(name, 0)} stored"
        for name, count in sorted(given.items())
        if not count == acknowledged[name] == stored.get(name, 0)
    ]
    if over:
        problems.append(f"{over} items have more answers than annotators_per_item")
    missing = sum(
        request_id not in setup.durations
        for leg in setup.legs
        for request_id in leg.answer_ids + leg.batch_ids
    )
    if missing:
        problems.append(f"{missing} measured requests are not in the server's request log")
    return problems


def label_of(tree: Path, trees: list[Path]) -> str:
    """A tree's name in the report: its directory's name, or "this tree" for the checkout."""
    return "this tree" if tree == REPO else tree.name


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank, as bench/load.py) in ms; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", help="a source tree (repeatable)")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="repeatable; all by default"
    )
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--overlap", type=int, default=1, help="annotators_per_item")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--ahead", type=int, default=5, help="fetch when fewer items are left")
    parser.add_argument(
        "--think",
        type=think_range,
        default=(0.5, 1.5),
        metavar="LOW:HIGH",
        help="seconds a person takes per item, drawn uniformly",
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--legs", type=int, default=2, help="legs per tree and scenario")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--out", type=Path, help="also write the report as Markdown")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [REPO])]
    scenarios = [SCENARIOS[name] for name in (args.scenario or list(SCENARIOS))]
    path = find_debian_data()
    if path is None:
        return 2
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        outcomes = [(s, run_scenario(s, trees, sources, labels, args)) for s in scenarios]
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    lines = report(outcomes, trees, args, started)
    print("\n".join(lines))
    if args.out:
        write_report(args.out, "bench/team.py", lines)
    return 0


def think_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"LOW:HIGH seconds, not {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"0 <= LOW <= HIGH, not {text!r}")
    return bounds


HEADER = [
    "scenario",
    "tree",
    "answers/s",
    "next p50",
    "next p95",
    "next p99",
    "ack p95",
    "client p50",
    "client p99",
    "server p50",
    "server p95",
    "server p99",
    "server max",
    "batch srv p99",
    "errors",
    "lost",
    "CPU busy",
    "load",
]


def report(
    outcomes: list[tuple[Scenario, list[Setup]]],
    trees: list[Path],
    args: argparse.Namespace,
    started: str,
) -> list[str]:
    """The report: what was run, one line of notes per scenario and tree, the table, and the
    verdicts on the targets (TARGET_SCENARIO, the last tree)."""
    lines = [
        f"code {code_version()}, {machine()}, started {started}; "
        f"PostgreSQL {postgres_version(args.postgres_url)}",
        f"{args.items:,} items, overlap {args.overlap}, batches of {args.batch_size} fetched "
        f"when < {args.ahead} left, think {args.think[0]:g}-{args.think[1]:g} s; "
        f"{args.legs} legs per tree of {args.warmup:g} s warm-up + {args.seconds:g} s measured",
        "trees: " + ", ".join(f"{label_of(t, trees)} = {t}" for t in trees),
        "",
    ]
    rows = []
    verdicts: list[tuple[bool, str]] = []
    for scenario, setups in outcomes:
        for setup in setups:
            name = f"{scenario.name}, {label_of(setup.tree, trees)}"
            legs = setup.legs
            server = [
                setup.durations[i] for leg in legs for i in leg.answer_ids if i in setup.durations
            ]
            batches = [
                setup.durations[i] for leg in legs for i in leg.batch_ids if i in setup.durations
            ]
            next_item = [v for leg in legs for v in leg.next_item]
            client = [v for leg in legs for v in leg.answer_client]
            acked = [v for leg in legs for v in leg.acknowledged_after]
            answered = sum(leg.answered for leg in legs)
            errors = [e for leg in legs for e in leg.errors]
            loads = [v for leg in legs for v in leg.load]
            busy = sum(leg.busy_share for leg in legs) / len(legs)
            rows.append(
                [
                    scenario.name,
                    label_of(setup.tree, trees),
                    f"{answered / (args.seconds * len(legs)):.1f}",
                    *(
                        f"{quantile(values, q):.1f}"
                        for values, q in (
                            (next_item, 0.50),
                            (next_item, 0.95),
                            (next_item, 0.99),
                            (acked, 0.95),
                            (client, 0.50),
                            (client, 0.99),
                            (server, 0.50),
                            (server, 0.95),
                            (server, 0.99),
                            (server, 1.0),
                            (batches, 0.99),
                        )
                    ),
                    str(len(errors)),
                    str(setup.lost),
                    f"{100 * busy:.0f}%",
                    f"{min(loads):.1f}-{max(loads):.1f}",
                ]
            )
            lines += [f"  error ({name}): {message}" for message in errors[:5]]
            lines += [f"  check ({name}): {problem}" for problem in setup.problems[:5]]
            lines.append(
                f"  {name}: {answered:,} measured answers, {len(next_item):,} measured "
                f"keypresses ({sum(leg.dry for leg in legs)} found no leased item waiting), "
                f"{sum(leg.duplicates for leg in legs)} items handed out twice; CPU s per leg "
                "(server/driver): "
                + ", ".join(f"{leg.cpu['server']:.1f}/{leg.cpu['driver']:.1f}" for leg in legs)
            )
            if scenario.name == TARGET_SCENARIO and setup.tree == trees[-1]:
                next_p95, server_p99 = quantile(next_item, 0.95), quantile(server, 0.99)
                verdicts = [
                    (
                        next_p95 < TARGET_NEXT_P95_MS,
                        f"keypress -> next item answerable p95 {next_p95:.1f} ms "
                        f"(target < {TARGET_NEXT_P95_MS:.0f})",
                    ),
                    (
                        server_p99 < TARGET_SERVER_P99_MS,
                        f"server p99 per answer request {server_p99:.1f} ms "
                        f"(target < {TARGET_SERVER_P99_MS:.0f})",
                    ),
                    (
                        not errors and not setup.lost and not setup.problems,
                        f"zero lost answers ({setup.lost} lost, {len(errors)} errors, "
                        f"{len(setup.problems)} check problems)",
                    ),
                ]
    lines += [
        "",
        "ms; next = keypress -> next item answerable, ack = keypress -> answer acknowledged, "
        "client and server = the answer request (server: its request log's duration), batch "
        "srv = POST .../batches on the server; CPU busy = both CPUs, the whole machine",
        "",
        *table(HEADER, rows, text_columns=2),
    ]
    if verdicts:
        target = f"{TARGET_SCENARIO}, {label_of(trees[-1], trees)}"
        lines += ["", *(f"{'PASS' if ok else 'FAIL'}: {target}: {what}" for ok, what in verdicts)]
    return lines


if __name__ == "__main__":
    sys.exit(main())
