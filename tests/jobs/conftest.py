"""Shared by the job tests: the job logger's lines, captured as JSON."""

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from app.logs import JsonFormatter


class JsonLines(logging.Handler):
    """The job logger's records, as the JSON lines it prints, parsed back."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def job_log() -> Iterator[JsonLines]:
    logger = logging.getLogger("labelwise.jobs")
    handler, level = JsonLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
