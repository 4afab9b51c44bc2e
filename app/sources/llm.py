"""The LLM adapter: the official `openai` client against any OpenAI-compatible endpoint
configured on the server, with its own retries off (`max_retries=0`). This module retries
429s, 5xx answers and connection failures with capped, jittered exponential backoff
(honouring Retry-After) and never other 4xx answers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.errors import LLMRefused, LLMUnavailable
from app.settings import Settings

if TYPE_CHECKING:
    import openai

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 60.0

Sleeper = Callable[[float], None]
Messages = list[dict[str, str]]


def backoff_delay(attempt: int, *, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number attempt + 1: the server's Retry-After when it sent
    one (capped), else capped exponential backoff with "equal jitter" (half fixed, half
    random), so concurrent clients do not retry in lockstep."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _retry_after(error: openai.APIError) -> float | None:
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers: Any = response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return float(str(raw)) / scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


def make_client(settings: Settings) -> openai.OpenAI:
    # Imported on first use: docs/design.md, "Import weight".
    import openai

    return openai.OpenAI(
        base_url=settings.llm_base_url,
        # The client insists on a key; local endpoints (vLLM, llama.cpp, Ollama) take any.
        api_key=settings.llm_api_key or "unused",
        max_retries=0,
        timeout=settings.llm_timeout_seconds,
    )


def complete(
    client: openai.OpenAI,
    *,
    model: str,
    messages: Messages,
    temperature: float,
    max_retries: int,
    sleep: Sleeper = time.sleep,
    rng: random.Random | None = None,
) -> tuple[str | None, int]:
    """One chat completion's content (None if the response itself was unreadable) and the
    number of transport retries it took. Raises LLMUnavailable when 429/5xx/connection
    failures outlast max_retries, LLMRefused at once on any other 4xx."""
    import openai

    rng = rng or random.Random(0)
    for attempt in range(max_retries + 1):
        try:
            response = client.chat.completions.create(
                model=model,
                messages=messages,  # type: ignore[arg-type]
                temperature=temperature,
            )
        except (
            openai.RateLimitError,
            openai.InternalServerError,
            openai.APIConnectionError,  # includes APITimeoutError
        ) as error:
            if attempt == max_retries:
                raise LLMUnavailable(
                    f"The LLM endpoint kept failing after {max_retries + 1} attempts: "
                    f"{_describe(error)}."
                ) from None
            sleep(backoff_delay(attempt, rng=rng, retry_after=_retry_after(error)))
            continue
        except openai.APIStatusError as error:
            raise LLMRefused(f"The LLM endpoint refused the request: {_describe(error)}.") from None
        except (openai.APIResponseValidationError, ValueError):
            return None, attempt
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None)
        return (content if isinstance(content, str) else None), attempt
    raise AssertionError("unreachable")


def _describe(error: openai.APIError) -> str:
    import openai

    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code} ({error.message[:300]})"
    return type(error).__name__
