"""A tiny OpenAI-compatible HTTP server for tests: POST /v1/chat/completions answers from a
script (a queue of responses) and records every request, so the real `openai` client is
exercised over real HTTP, retries and all.

    with FakeLLM() as llm:
        llm.script(rate_limited(), chat('["a", "b"]'))
        ... point LABELWISE_LLM_BASE_URL at llm.base_url ...
        llm.requests  # the JSON bodies received, in order
"""

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Scripted:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def chat(content: str, *, model: str = "fake-model") -> Scripted:
    """A successful chat completion whose message content is `content`."""
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return Scripted(200, json.dumps(body))


def error(status: int, message: str = "scripted error", **headers: str) -> Scripted:
    body = {"error": {"message": message, "type": "fake", "code": None, "param": None}}
    return Scripted(status, json.dumps(body), headers)


def rate_limited(retry_after: str | None = "0") -> Scripted:
    return error(429, "slow down", **({"Retry-After": retry_after} if retry_after else {}))


class FakeLLM:
    """The server on 127.0.0.1 and a free port, served from a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(error(404, f"no route {self.path}"))
                    return
                with fake._lock:
                    fake.requests.append(json.loads(raw or b"{}"))
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    scripted = fake._queue.popleft() if fake._queue else None
                self._send(scripted or error(418, "the fake LLM has no scripted answer left"))

            def _send(self, scripted: Scripted) -> None:
                body = scripted.body.encode()
                self.send_response(scripted.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in scripted.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeLLM":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def script(self, *responses: Scripted) -> None:
        """Replace the queue of answers and forget the recorded requests."""
        with self._lock:
            self._queue = deque(responses)
            self.requests.clear()
            self.headers.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def __enter__(self) -> "FakeLLM":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
