"""The `labelwise` command: migrate, create a key in the database, write the spec."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from app.cli import main
from app.db import Database
from app.services.api_keys import authenticate
from app.settings import get_settings


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("LABELWISE_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_migrate_then_create_api_key(cli_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert main(["create-api-key", "--name", "ops", "--role", "service", "--tier", "in_house"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("lw_")
    database = Database(get_settings())
    with Session(database.engine) as session:
        principal = authenticate(session, presented=secret)
    database.engine.dispose()
    assert (principal.name, principal.role, principal.tier) == ("ops", "service", "in_house")
    assert main(["create-api-key", "--name", "ops", "--role", "admin"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_openapi_is_written_with_sorted_keys(tmp_path: Path) -> None:
    target = tmp_path / "spec" / "openapi.json"
    assert main(["openapi", "--output", str(target)]) == 0
    text = target.read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
