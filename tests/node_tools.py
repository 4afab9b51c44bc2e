"""The pinned node tools (clients/typescript/package.json): redocly, openapi-typescript,
openapi-fetch and tsc, installed with `npm ci` into clients/typescript/node_modules (ignored
by git) the first time a test needs them, and again only when package-lock.json changes.

Without node and npm the tests that need them skip, loudly, with the reason; on CI (`CI` set)
they fail instead: CI has node and must run them.
"""

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPESCRIPT = ROOT / "clients" / "typescript"
# Written after a successful `npm ci`: the hash of the lock file it installed.
STAMP = TYPESCRIPT / "node_modules" / ".labelwise-lock-sha256"


def require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    reason = (
        f"{' and '.join(missing)} not found: the TypeScript client and redocly lint tests "
        "(clients/typescript) do not run here; install Node.js 20+ to run them"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run every client test: {reason}")
    pytest.skip(reason)


@functools.cache
def _install() -> Path:
    lock = hashlib.sha256((TYPESCRIPT / "package-lock.json").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text() == lock):
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TYPESCRIPT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"npm ci failed in {TYPESCRIPT}:\n{done.stderr}"
        STAMP.write_text(lock)
    return TYPESCRIPT / "node_modules" / ".bin"


def node_bin() -> Path:
    """The directory of the pinned tools' executables (installing them if needed)."""
    require_node()
    return _install()


def node_env() -> dict[str, str]:
    """No telemetry or update checks from the tools (the network may be closed)."""
    return {
        **os.environ,
        "REDOCLY_TELEMETRY": "off",
        "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
        "NO_UPDATE_NOTIFIER": "1",
    }
