"""The clients generated from openapi/openapi.json, built as docs/clients.md says and driven
against a real server: clients/python/flow.py through openapi-python-client's package (under
mypy --strict), clients/typescript/flow.ts through openapi-typescript + openapi-fetch (under
tsc --strict). Each flow creates a project, ingests, fetches a batch as each of two
annotators and answers it, reads the agreement, trains a model and reads the job's typed
result, then uploads a file to import (multipart); the test then checks what it printed
against the server.

The TypeScript leg needs node and npm (tests/node_tools.py: a loud skip without them, a
failure on CI).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ADMIN_KEY, ROOT, LiveServer
from tests.node_tools import TYPESCRIPT, node_bin, node_env

pytestmark = pytest.mark.e2e

SPEC = ROOT / "openapi" / "openapi.json"
PYTHON = ROOT / "clients" / "python"
BIN = Path(sys.executable).parent
# The one warning openapi-python-client gives on this spec: it skips the NDJSON body of
# createItems (docs/clients.md shows that call done by hand).
EXPECTED_WARNINGS = ["Unsupported content type application/x-ndjson"]


def run(command: list[str | Path], **options: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **options)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the generated package `labelwise_client`."""
    out = tmp_path_factory.mktemp("python-client")
    done = run(
        [
            BIN / "openapi-python-client",
            "generate",
            "--path",
            SPEC,
            "--config",
            PYTHON / "config.yaml",
            "--meta",
            "none",
            "--output-path",
            out / "labelwise_client",
        ],
        cwd=out,
        # Its post-hook runs `ruff format`: the project's pinned ruff.
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    log = done.stdout + done.stderr
    warnings = re.findall(r"^WARNING parsing .*?\n\n(.*?)\n", log, flags=re.MULTILINE)
    assert warnings == EXPECTED_WARNINGS, log
    assert "Unable" not in log and "Cannot" not in log, log
    return out


@pytest.fixture(scope="module")
def typescript_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with flow.ts, its tsconfig, the types openapi-typescript generates
    (schema.d.ts) and the pinned node_modules."""
    tools = node_bin()
    out = tmp_path_factory.mktemp("typescript-client")
    for name in ("flow.ts", "tsconfig.json"):
        shutil.copy(TYPESCRIPT / name, out / name)
    (out / "package.json").write_text('{"type": "module"}\n')
    (out / "node_modules").symlink_to(TYPESCRIPT / "node_modules", target_is_directory=True)
    run(
        [
            tools / "openapi-typescript",
            SPEC,
            "--default-non-nullable=false",
            "--output",
            out / "schema.d.ts",
        ],
        env=node_env(),
    )
    return out


def test_python_client_passes_mypy_strict(python_client: Path) -> None:
    run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file=",
            "--cache-dir",
            python_client / ".mypy_cache",
            python_client / "labelwise_client",
            PYTHON / "flow.py",
        ],
        env={**os.environ, "MYPYPATH": str(python_client)},
    )


def test_typescript_client_passes_tsc_strict(typescript_client: Path) -> None:
    tsc = typescript_client / "node_modules" / ".bin" / "tsc"
    run([tsc, "--noEmit", "-p", typescript_client / "tsconfig.json"], env=node_env())


def test_python_client_drives_a_live_server(live_server: LiveServer, python_client: Path) -> None:
    done = run(
        [sys.executable, PYTHON / "flow.py", live_server.base_url, ADMIN_KEY],
        env={**os.environ, "PYTHONPATH": str(python_client)},
    )
    check_flow(live_server, json.loads(done.stdout))


def test_typescript_client_drives_a_live_server(
    live_server: LiveServer, typescript_client: Path
) -> None:
    tsc = typescript_client / "node_modules" / ".bin" / "tsc"
    # Emit only: the test above type-checks (once, for it is the slow part).
    run([tsc, "--noCheck", "-p", typescript_client / "tsconfig.json"], env=node_env())
    flow = typescript_client / "dist" / "flow.js"
    done = run(["node", flow, live_server.base_url, ADMIN_KEY], env=node_env())
    check_flow(live_server, json.loads(done.stdout))


def check_flow(server: LiveServer, summary: dict[str, Any]) -> None:
    """What a flow printed is what the server holds."""
    assert (summary["created"], summary["answered"]) == (12, 24)
    assert summary["krippendorff_alpha"] == 1.0 and summary["band"] == "excellent"
    with server.client() as admin:
        job = admin.get(f"/v1/jobs/{summary['job_id']}").json()
        upload = admin.get(f"/v1/jobs/{summary['import_job_id']}").json()
        stats = admin.get(f"/v1/projects/{summary['project_id']}/stats").json()
    assert job["kind"] == job["result"]["kind"] == "train_model"
    assert job["result"]["version"] == summary["version"] == 1
    assert job["result"]["model_version"] == summary["model_version"]
    assert job["result"]["macro_f1"] == summary["macro_f1"]
    assert stats["items_by_status"] == {**stats["items_by_status"], "labeled": 12, "unlabeled": 2}
    assert upload["kind"] == "import_file" and upload["project_id"] == summary["project_id"]
    assert upload["result"]["items"]["created"] == summary["imported"] == 2
