"""The outside end of webhooks: which URLs the service sends to, and one signed POST.

A target must be http(s) and, unless private targets are allowed, every address its host
resolves to must be public: no loopback, link-local (cloud metadata), private, shared,
multicast or reserved address. The check runs when a webhook is created and again before each
attempt, and the request goes to the address that was checked (the host name still travels
as `Host` and, for https, as the TLS server name), so a name that resolves differently later
cannot redirect a delivery inside the network. Redirects are never followed, and only a short
prefix of the answer is read. Signing is the Standard Webhooks scheme, done by the
`standardwebhooks` package (the one receivers verify with).
"""

import ipaddress
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
from standardwebhooks import Webhook as Signer

from app.errors import ErrorDetail, WebhookTargetRefused

USER_AGENT = "Labelwise-Webhooks/1"
# Bytes read of an answer: enough for the prefix that is kept, never a whole body.
READ_LIMIT_BYTES = 1024
ERROR_CHARS = 500

Resolver = Callable[[str, int], Sequence[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (a literal address resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def address_kind(address: str) -> str | None:
    """Why an address is not a public one ("loopback", "link-local", "private", ...), or
    None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, test in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return kind
    return None if ip.is_global else "non-public"


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (the checked addresses; none when private targets are
    allowed and the name is left to the HTTP client)."""

    url: str
    parts: SplitResult
    host: str
    addresses: tuple[str, ...]


def _refuse(detail: str) -> WebhookTargetRefused:
    return WebhookTargetRefused(detail, errors=[ErrorDetail(loc=["body", "url"], msg=detail)])


def check_target(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """The URL as a target the service may send to; raises WebhookTargetRefused (422)."""
    try:
        httpx.URL(url.strip())
        parts = urlsplit(url.strip())
    except (httpx.InvalidURL, ValueError):
        raise _refuse("The URL is not a valid absolute http(s) URL.") from None
    if any(ord(c) < 33 or ord(c) == 127 for c in url.strip()):
        raise _refuse("The URL must not contain spaces or control characters.")
    if parts.scheme.lower() not in ("http", "https"):
        raise _refuse(f"Only http and https URLs are allowed, not {parts.scheme or 'none'!r}.")
    if parts.username is not None or parts.password is not None:
        raise _refuse("The URL must not carry credentials (user:password@); verify signatures.")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise _refuse("The URL's port is not a number from 1 to 65535.") from None
    if not host:
        raise _refuse("The URL has no host.")
    if allow_private:
        return Target(url, parts, host, ())
    try:
        addresses = list(resolver(host, port))
    except (OSError, UnicodeError):
        raise _refuse(f"The host {host!r} does not resolve.") from None
    if not addresses:
        raise _refuse(f"The host {host!r} does not resolve.")
    for address in addresses:
        kind = address_kind(address)
        if kind is not None:
            article = "an" if kind[0] in "aeiou" else "a"
            raise _refuse(
                f"The host {host!r} resolves to {address}, {article} {kind} address: webhooks "
                "go to public addresses only (LABELWISE_WEBHOOKS_ALLOW_PRIVATE=true allows "
                "others)."
            )
    return Target(url, parts, host, tuple(addresses))


def _pinned(target: Target) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL to request, extra headers and request extensions: with checked addresses, the
    first of them in place of the name, the name kept as Host and TLS server name."""
    if not target.addresses:
        return target.url, {}, {}
    address = target.addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if target.parts.port is None else f"{literal}:{target.parts.port}"
    url = urlunsplit(target.parts._replace(netloc=netloc))
    host_header = target.parts.netloc.rpartition("@")[2]
    extensions = {"sni_hostname": target.host} if target.parts.scheme.lower() == "https" else {}
    return url, {"host": host_header}, extensions


@dataclass(frozen=True)
class Outcome:
    """One attempt: the status received (None if none was), why it failed, the answer's
    first characters."""

    status_code: int | None
    error: str | None
    response_prefix: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(*, secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (a new timestamp and signature each)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def new_client(timeout: float) -> httpx.Client:
    """A client for deliveries: short timeouts, no redirects, no proxies from the environment
    (a proxy would take the request past the address check)."""
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False)


def post(
    client: httpx.Client,
    *,
    url: str,
    secret: str,
    message_id: str,
    body: str,
    allow_private: bool,
    prefix_chars: int,
) -> Outcome:
    """Sign and POST one event body; never raises for what the target does."""
    try:
        target = check_target(url, allow_private=allow_private)
    except WebhookTargetRefused as refused:
        return Outcome(None, refused.detail[:ERROR_CHARS], None)
    request_url, extra_headers, extensions = _pinned(target)
    headers = signed_headers(secret=secret, message_id=message_id, body=body, at=datetime.now(UTC))
    try:
        with client.stream(
            "POST",
            request_url,
            content=body.encode(),
            headers={**headers, **extra_headers},
            extensions=extensions,
        ) as response:
            prefix = _read_prefix(response, prefix_chars)
    except httpx.TimeoutException as error:
        return Outcome(None, f"timed out ({type(error).__name__})", None)
    except httpx.HTTPError as error:
        return Outcome(None, f"{type(error).__name__}: {error}"[:ERROR_CHARS], None)
    if 200 <= response.status_code < 300:
        return Outcome(response.status_code, None, prefix)
    reason = f"HTTP {response.status_code}"
    if 300 <= response.status_code < 400:
        reason += " (redirects are not followed)"
    return Outcome(response.status_code, reason, prefix)


def _read_prefix(response: httpx.Response, chars: int) -> str | None:
    """The first characters of the answer's body; the rest is never read."""
    received = b""
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) >= READ_LIMIT_BYTES:
            break
    text = received[:READ_LIMIT_BYTES].decode("utf-8", errors="replace")[:chars]
    return text or None
