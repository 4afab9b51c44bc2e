"""A slow webhook receiver does not slow the API: annotation latency with no webhook, with a
webhook to a receiver that answers at once, and with one to a receiver that sleeps 10 s
before it answers, in one run, as ratios to the first.

Setup (not timed): per database, a fresh migrated database, one `labelwise serve` process
(LABELWISE_WEBHOOKS_TIMEOUT_SECONDS=15, so every attempt to the slow receiver waits its full
sleep and the process's sending threads stay busy), two receiver processes (plain HTTP
servers that sleep 0 s and --sleep s, then answer 200), and three production projects of
--requests + 20 items each: `none` with no webhook, `fast` and `slow` each with a webhook for
its own `items.labeled` events, to the fast and the slow receiver.

Measured: rounds of one POST .../annotations to each project in turn, each answer labeling
one item (so every `fast` and `slow` request writes an event), one request at a time; the
client's wall time per request after 20 unmeasured rounds. Reported: the median, p95 and mean
per project, their ratios to `none`, and how many deliveries each receiver had answered by
the end (all for `fast`; few for `slow`, at 10 s each). `fast` against `none` is the cost of
writing an event; `slow` against `fast` is what a slow receiver adds.

    .venv/bin/python bench/webhooks.py [--only sqlite,postgres] [--requests 300] [--sleep 10]
"""

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BenchError,
    Database,
    add_backends_option,
    api_client,
    code_version,
    expect,
    free_port,
    load_average,
    ms,
    on_each_database,
    percentile,
    progress,
    running_server,
    service_env,
    table,
    write_report,
)

from app.migrations import upgrade  # noqa: E402

ADMIN_KEY = "lw_" + "w" * 43
WARMUP = 20
LEGS = ("none", "fast", "slow")
RECEIVER = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(float(sys.argv[2]))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Slow).serve_forever()
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_backends_option(parser)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per project")
    parser.add_argument("--sleep", type=float, default=10.0, help="the receiver's sleep, seconds")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args()
    backends = [b for b in ("sqlite", "postgres") if b in args.only]
    results, status = on_each_database(
        backends, args.postgres_url, "labelwise_bench_webhooks", lambda db: run(db, args)
    )
    lines = [
        f"code {code_version()}, {args.requests} requests per project, "
        f"receiver sleeps {args.sleep:g} s",
        "",
    ]
    rows = [row for result in results for row in result]
    if rows:
        lines += table(
            [
                "database",
                "webhook",
                "p50 ms",
                "p95 ms",
                "mean ms",
                "p50 ratio",
                "p95 ratio",
                "mean ratio",
                "delivered",
                "load",
            ],
            rows,
            text_columns=2,
        )
    print("\n".join(lines))
    if args.out:
        write_report(args.out, "bench/webhooks.py", lines)
    return status


def run(database: Database, args: argparse.Namespace) -> list[list[str]]:
    progress(f"{database.backend}: migrate, start the receiver and the server")
    upgrade(database.url)
    ports = {"fast": free_port(), "slow": free_port()}
    receivers = [
        subprocess.Popen(
            [sys.executable, "-c", RECEIVER, str(ports[name]), str(sleep)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, sleep in (("fast", 0.0), ("slow", args.sleep))
    ]
    env = service_env(
        database.url,
        database.workdir,
        bootstrap_admin_key=ADMIN_KEY,
        webhooks_allow_private="true",
        webhooks_timeout_seconds="15",
    )
    try:
        with (
            running_server(env, database.workdir / "server.log") as server,
            api_client(server, ADMIN_KEY, timeout=60) as client,
        ):
            return measure(client, database.backend, ports, args)
    finally:
        for receiver in receivers:
            receiver.terminate()
            receiver.wait(timeout=10)


def project(client: httpx.Client, name: str, count: int) -> tuple[int, list[int]]:
    created = expect(
        client.post(
            "/v1/projects",
            json={"name": name, "labels": ["bug", "feature"], "phase": "production"},
        ),
        201,
        "create a project",
    )
    items = [{"text": f"{name} ticket {i}: the app crashes on save"} for i in range(count)]
    ingested = expect(client.post(f"/v1/projects/{created['id']}/items", json=items), 200, "ingest")
    return created["id"], [r["id"] for r in ingested["results"]]


def measure(
    client: httpx.Client, backend: str, ports: dict[str, int], args: argparse.Namespace
) -> list[list[str]]:
    count = args.requests + WARMUP
    projects = {name: project(client, name, count) for name in LEGS}
    webhooks = {}
    for name, port in ports.items():
        webhooks[name] = expect(
            client.post(
                "/v1/webhooks",
                json={
                    "url": f"http://127.0.0.1:{port}/{name}",
                    "events": ["items.labeled"],
                    "project_id": projects[name][0],
                },
            ),
            201,
            "create a webhook",
        )["id"]
    timings: dict[str, list[float]] = {name: [] for name in LEGS}
    progress(f"{backend}: {count} rounds")
    for round_ in range(count):
        for name in LEGS:
            project_id, items = projects[name]
            body = [{"item_id": items[round_], "label": "bug"}]
            started = time.perf_counter()
            response = client.post(f"/v1/projects/{project_id}/annotations", json=body)
            elapsed = time.perf_counter() - started
            expect(response, 200, f"answer in {name}")
            if round_ >= WARMUP:
                timings[name].append(elapsed)
    load = f"{load_average():.2f}"
    figures = {name: summary(values) for name, values in timings.items()}
    rows = []
    for name in LEGS:
        ratios = [
            f"{value / base:.2f}"
            for value, base in zip(figures[name], figures["none"], strict=True)
        ]
        answered = delivered(client, webhooks[name]) if name in webhooks else "-"
        rows.append([backend, name, *(ms(v) for v in figures[name]), *ratios, answered, load])
    return rows


def summary(values: list[float]) -> tuple[float, float, float]:
    if not values:
        raise BenchError("nothing measured")
    return percentile(values, 50), percentile(values, 95), statistics.fmean(values)


def delivered(client: httpx.Client, webhook_id: int) -> str:
    """'succeeded of all' deliveries to the slow receiver when the measurement ended."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = expect(
            client.get(f"/v1/webhooks/{webhook_id}/deliveries", params=params), 200, "deliveries"
        )
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    succeeded = sum(1 for row in rows if row["status"] == "succeeded")
    return f"{succeeded}/{len(rows)}"


if __name__ == "__main__":
    sys.exit(main())
