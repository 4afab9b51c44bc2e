"""The layers import one way (docs/conventions.md, "Layers").

A request flows route → service → ml | registry | sources; job code (app/tasks) calls the
same services; nothing below the HTTP edge imports FastAPI or Starlette; app/ml imports
nothing of the app and no SQL. The import graph is read from the source with `ast`, so
imports inside functions (the lazy ones) and under `TYPE_CHECKING` count too: they are
dependencies all the same.
"""

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

WEB = frozenset({"fastapi", "starlette"})
SQL = frozenset({"sqlalchemy", "sqlmodel"})
NONE: frozenset[str] = frozenset()

# Layer under app/ (the longest matching prefix) -> (what of the app it may import besides its
# own modules, "*" for anything; third-party packages it may not import).
RULES: dict[str, tuple[str, frozenset[str]]] = {
    # The HTTP edge and the entry points wire everything together.
    "main": ("*", NONE),
    "cli": ("*", NONE),
    "deps": ("*", NONE),
    "middleware": ("*", NONE),
    # The router retries a request's transaction after a database fault (api/routing.py) and
    # answers a POST's retry with an Idempotency-Key from its record (api/idempotency.py).
    "api": ("errors db db_faults models services.idempotency services.api_keys", NONE),
    # Routes call services; reading a request body (JSON, NDJSON) is HTTP work.
    "api.routes": (
        "services models deps errors pagination api.routing sources.json_bodies",
        NONE,
    ),
    # Job code: what runs in a job process, beside the request-time service it calls.
    "tasks": ("services models ml registry sources jobs.context db errors settings", WEB),
    "services": (
        "ml registry sources models db db_faults errors settings pagination jobs.context",
        WEB,
    ),
    "registry": ("ml errors", WEB),
    "sources": ("models errors settings", WEB),
    "ml": ("", WEB | SQL),
    "models": ("ml errors pagination", WEB),
    # The job runners: app/jobs/kinds.py names the job functions as strings, never imports them.
    # A job's end is an event, written with it (services/events, which imports only models).
    "jobs": ("db db_faults models errors settings logs services.events", WEB),
    "db": ("settings", WEB),
    "db_faults": ("errors", WEB),
    "pagination": ("errors models", WEB),
    "migrations": ("errors", WEB),
    "errors": ("", WEB),
    # Writes docs/errors.md from the problem types (`labelwise errors-doc`).
    "errors_doc": ("errors", WEB),
    "settings": ("", WEB),
    "logs": ("", WEB),
}

# Edges that break a rule today, each to be removed by the change that fixes it (the test
# below fails once an entry is no longer needed).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("app.api.routes.models", "app.registry.algorithms"): "lists ALGORITHMS itself",
    ("app.api.routes.dataset_versions", "app.sources.exports"): "reads MEDIA_TYPES itself",
    ("app.api.routes.health", "app.migrations"): "readiness reads the schema revision",
}


def module_names(root: Path) -> dict[str, Path]:
    """Every module under root/app by dotted name; a package is named by its __init__.py."""
    names: dict[str, Path] = {}
    for path in sorted((root / "app").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """What a module imports: app modules by full name (`from app.x import y` is app.x.y when
    y is a module), anything else by its top-level package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {name if name.split(".")[0] == "app" else name.split(".")[0] for name in found}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> what it imports (app modules, third-party top-level packages)."""
    names = module_names(root)
    return {module: imports_of(module, path, set(names)) for module, path in names.items()}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    """The longest RULES prefix that contains the module (the package root `app` has none)."""
    layers = [layer for layer in RULES if within(module, f"app.{layer}")]
    return max(layers, key=len) if layers else None


def violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) edges that break a rule, in order."""
    broken = []
    for module, imported in sorted(graph.items()):
        layer = layer_of(module)
        if layer is None:
            continue
        may_import, may_not_use = RULES[layer]
        allowed = {f"app.{name}" for name in [layer, *may_import.split()]}
        for target in sorted(imported):
            if target.split(".")[0] != "app":
                wrong = target in may_not_use
            else:
                wrong = may_import != "*" and not any(within(target, a) for a in allowed)
            if wrong:
                broken.append((module, target))
    return broken


GRAPH = import_graph(APP.parent)


def test_every_module_belongs_to_a_layer() -> None:
    unruled = [m for m in GRAPH if m != "app" and layer_of(m) is None]
    assert not unruled, f"add these to RULES in {__file__}: {unruled}"


def test_layers_import_the_right_way() -> None:
    broken = [edge for edge in violations(GRAPH) if edge not in KNOWN_EXCEPTIONS]
    assert not broken, "\n".join(f"{a} must not import {b}" for a, b in broken)


def test_known_exceptions_are_still_needed() -> None:
    fixed = set(KNOWN_EXCEPTIONS) - set(violations(GRAPH))
    assert not fixed, f"no longer needed, remove from KNOWN_EXCEPTIONS: {sorted(fixed)}"


def test_the_package_root_imports_nothing() -> None:
    assert not {name for name in GRAPH["app"] if name.split(".")[0] == "app"}


def test_job_functions_live_in_app_tasks() -> None:
    if not (APP / "tasks").is_dir():
        pytest.skip("app/tasks/ does not exist yet")
    from app.jobs.kinds import JOB_FUNCTIONS

    elsewhere = {
        str(kind): function.__module__
        for kind, function in JOB_FUNCTIONS.items()
        if not function.__module__.startswith("app.tasks.")
    }
    assert not elsewhere, elsewhere


class TestTheCheckerCanFail:
    def test_wrong_way_edges_are_reported(self) -> None:
        graph = {
            "app.ml.features": {"numpy", "app.ml.metrics", "app.db", "sqlalchemy"},
            "app.services.items": {"app.models.item", "app.tasks.imports", "fastapi"},
            "app.models.item": {"app.services.items"},
            "app.api.routes.items": {"app.services.items", "app.registry.cache"},
            "app.jobs.kinds": {"app.tasks.training"},
            "app.tasks.training": {"app.services.model_versions", "app.api.routes.models"},
        }
        assert violations(graph) == [
            ("app.api.routes.items", "app.registry.cache"),
            ("app.jobs.kinds", "app.tasks.training"),
            ("app.ml.features", "app.db"),
            ("app.ml.features", "sqlalchemy"),
            ("app.models.item", "app.services.items"),
            ("app.services.items", "app.tasks.imports"),
            ("app.services.items", "fastapi"),
            ("app.tasks.training", "app.api.routes.models"),
        ]

    def test_lazy_relative_and_type_checking_imports_are_seen(self, tmp_path: Path) -> None:
        ml = tmp_path / "app" / "ml"
        ml.mkdir(parents=True)
        for package in (tmp_path / "app", ml):
            (package / "__init__.py").write_text("")
        (tmp_path / "app" / "db.py").write_text("")
        (ml / "metrics.py").write_text("")
        (ml / "features.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "from . import metrics\n"
            "if TYPE_CHECKING:\n"
            "    from starlette.requests import Request\n"
            "def load() -> None:\n"
            "    from app import db\n"
        )
        graph = import_graph(tmp_path)
        assert graph["app.ml.features"] == {"typing", "app.ml.metrics", "starlette", "app.db"}
        assert violations(graph) == [
            ("app.ml.features", "app.db"),
            ("app.ml.features", "starlette"),
        ]
