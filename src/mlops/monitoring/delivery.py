"""What every alert channel shares: the message, the channel protocol, what a failed attempt
means (HTTP and SMTP failures classified, one HTTP POST helper), and retrying. The channels
themselves are in ``mlops.monitoring.channels``.

``deliver(channel, message, policy)`` calls ``channel.send(message)`` until it succeeds, fails
permanently or has made ``policy.max_attempts`` attempts, and returns a :class:`DeliveryResult`
with every attempt's times and error.

Transient or permanent (a channel raises :class:`DeliveryFailed` saying which)
    Transient, tried again: connection refused or reset, DNS failure, timeouts, HTTP 5xx, 429
    and 408, SMTP 4xx replies and a server that hangs up. Permanent, given up at once: other
    HTTP 4xx, redirects (a signed POST is not replayed elsewhere: configure the final URL),
    SMTP 5xx replies (a 535 wrong password among them), TLS failures (an untrusted
    certificate does not heal by itself) and a server lacking STARTTLS or AUTH.

Backoff (defaults in :class:`RetryPolicy`)
    The wait before retry *n* is drawn uniformly from ``[0, min(max_delay, initial_delay *
    factor ** (n - 1))]`` ("full jitter"): when a receiver goes down every rule's alert fails
    at once, and fixed delays would bring them back in lockstep. The defaults, 5 attempts from
    1 s growing 4-fold and capped at 60 s, allow up to 1 + 4 + 16 + 60 = 81 s of waiting
    (about 40 s on average): enough to ride out a receiver's restart, while an alert is never
    more than a minute and a half late. A ``Retry-After`` (seconds or an HTTP date) on a 429
    or 5xx is waited exactly, capped at ``max_delay``.

Secrets
    A reason is built from status codes, exception types and at most 200 characters of what
    the receiver answered, and every secret the channel knows is replaced by ``***`` in it.
    The original exception is not chained (``from None``): httpx's request objects hold the
    URL, and a traceback printed in a log would show it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import random
import smtplib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import httpx
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

REDACTED = "***"
MAX_DETAIL_CHARACTERS = 200
TRANSIENT_HTTP_STATUSES = frozenset({408, 429})

Severity = Literal["info", "warning", "critical"]
Status = Literal["firing", "resolved", "test"]
STATUS_WORDS: dict[Status, str] = {"firing": "Firing", "resolved": "Resolved", "test": "Test"}


# --------------------------------------------------------------------------- the message


def _utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError("must carry a time zone (UTC is expected)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def alert_fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """A stable dedup key: the same rule over the same labels is the same alert."""
    canonical = json.dumps([rule, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class AlertMessage(BaseModel):
    """One notification: an alert firing or resolved, or a channel's test message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str = Field(min_length=1, max_length=200)
    severity: Severity
    status: Status
    title: str = Field(min_length=1, max_length=300)
    summary: str = Field(default="", max_length=4000)
    figure: str | None = Field(default=None, description="What was measured, e.g. 'psi'.")
    value: float | None = Field(default=None, allow_inf_nan=False)
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    labels: dict[str, str] = Field(default_factory=dict, description="deployment, variant, ...")
    started_at: UtcDatetime
    resolved_at: UtcDatetime | None = None
    fingerprint: str = Field(min_length=1, max_length=200)
    link: AnyHttpUrl | None = None

    @model_validator(mode="after")
    def _resolution_matches_status(self) -> AlertMessage:
        if self.status == "resolved" and self.resolved_at is None:
            raise ValueError("resolved_at is required when status is 'resolved'")
        if self.status != "resolved" and self.resolved_at is not None:
            raise ValueError("resolved_at is only set when status is 'resolved'")
        if self.resolved_at is not None and self.resolved_at < self.started_at:
            raise ValueError("resolved_at is before started_at")
        return self

    @classmethod
    def test_message(cls, now: datetime | None = None) -> AlertMessage:
        """What a channel's test endpoint sends."""
        sent_at = now or datetime.now(UTC)
        return cls(
            rule="channel-test",
            severity="info",
            status="test",
            title="Test message from MLOps",
            summary="If you can read this, the channel delivers alerts.",
            started_at=sent_at,
            fingerprint=f"channel-test-{int(sent_at.timestamp())}",
        )

    def to_json(self) -> bytes:
        """The message as JSON; timestamps ISO-8601 in UTC (``2026-01-31T12:00:00Z``)."""
        return self.model_dump_json().encode()

    @property
    def headline(self) -> str:
        """``[FIRING][critical] rule — deployment``, on one line."""
        deployment = self.labels.get("deployment")
        text = f"[{self.status.upper()}][{self.severity}] {self.rule}"
        return " ".join((f"{text} — {deployment}" if deployment else text).split())

    def facts(self) -> list[tuple[str, str]]:
        """The details every channel shows, as (name, text)."""
        rows = [("Rule", self.rule), ("Severity", self.severity)]
        if self.figure is not None and self.value is not None:
            limit = f" (threshold {self.threshold:.4g})" if self.threshold is not None else ""
            rows.append(("Figure", f"{self.figure} = {self.value:.4g}{limit}"))
        if self.labels:
            rows.append(("Labels", ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))))
        rows.append(("Started", _iso(self.started_at)))
        if self.resolved_at:
            rows.append(("Resolved", _iso(self.resolved_at)))
        rows.append(("Fingerprint", self.fingerprint))
        return rows


class AlertChannel(Protocol):
    """Makes one attempt to deliver; raises ``DeliveryFailed`` saying whether it may pass."""

    async def send(self, message: AlertMessage) -> None: ...


# --------------------------------------------------------------------------- failures


class DeliveryFailed(Exception):
    """One attempt's failure. ``transient`` says whether trying again may succeed;
    ``retry_after`` is the receiver's own request for a wait, in seconds."""

    def __init__(self, reason: str, transient: bool, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"DeliveryFailed({self.reason!r}, transient={self.transient})"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``, longest first so that a
    secret containing another is removed whole."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > MAX_DETAIL_CHARACTERS:
        return flat[: MAX_DETAIL_CHARACTERS - 1] + "…"
    return flat


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def failure_from_response(
    target: str, response: httpx.Response, secrets: Iterable[str]
) -> DeliveryFailed:
    """The failure an HTTP answer other than 2xx means."""
    status, detail = response.status_code, _one_line(response.text)
    reason = scrub(f"{target} answered HTTP {status}{': ' + detail if detail else ''}", secrets)
    if status >= 500 or status in TRANSIENT_HTTP_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        return DeliveryFailed(reason, transient=True, retry_after=retry_after)
    if 300 <= status < 400:
        return DeliveryFailed(f"{reason} (a redirect; configure the final URL)", transient=False)
    return DeliveryFailed(reason, transient=False)


def failure_from_http_error(
    target: str, error: Exception, secrets: Iterable[str], timeout: float
) -> DeliveryFailed:
    """The failure an ``httpx.HTTPError`` or ``httpx.InvalidURL`` means."""
    described = scrub(f"{type(error).__name__}: {error}".rstrip(": "), secrets)
    if isinstance(error, httpx.TimeoutException):
        return DeliveryFailed(f"{target} did not answer within {timeout:g} s ({described})", True)
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return DeliveryFailed(f"{target} is not a usable URL ({described})", transient=False)
    if isinstance(error, httpx.TransportError):
        return DeliveryFailed(f"{target} could not be reached ({described})", transient=True)
    return DeliveryFailed(f"{target} failed ({described})", transient=False)


def _smtp_reply(code: int, text: bytes | str) -> str:
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {_one_line(decoded)}".strip()


def failure_from_smtp_error(
    target: str, error: Exception, secrets: Iterable[str], timeout: float
) -> DeliveryFailed:
    """The failure an ``smtplib.SMTPException`` or ``OSError`` means."""
    described = f"{type(error).__name__}: {error}"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        listed = ", ".join(
            f"{to} ({_smtp_reply(*reply)})" for to, reply in error.recipients.items()
        )
        transient = all(400 <= code < 500 for code, _ in error.recipients.values())
        reason = f"{target} refused every recipient: {listed}"
    elif isinstance(error, smtplib.SMTPResponseException):
        transient = 400 <= error.smtp_code < 500
        reply = _smtp_reply(error.smtp_code, error.smtp_error)
        refused = isinstance(error, smtplib.SMTPAuthenticationError)
        reason = f"{target} refused the login: {reply}" if refused else f"{target} answered {reply}"
    elif isinstance(error, smtplib.SMTPServerDisconnected):
        transient, reason = True, f"{target} closed the connection ({error})"
    elif isinstance(error, smtplib.SMTPException):  # no STARTTLS, no usable AUTH mechanism...
        transient, reason = False, f"{target}: {error}"
    elif isinstance(error, ssl.SSLError):
        transient, reason = False, f"{target}: TLS failed ({described})"
    elif isinstance(error, TimeoutError):
        transient, reason = True, f"{target} did not answer within {timeout:g} s"
    else:
        transient, reason = True, f"{target} could not be reached ({described})"
    return DeliveryFailed(scrub(reason, secrets), transient)


@asynccontextmanager
async def _http_client(shared: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    if shared is not None:
        yield shared
        return
    async with httpx.AsyncClient() as client:
        yield client


async def post_with_failures(
    shared: httpx.AsyncClient | None,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    target: str,
    secrets: list[str],
    timeout_seconds: float,
) -> None:
    """One POST; anything but a 2xx answer raises ``DeliveryFailed``. ``shared``: a client
    to reuse, else one is opened for this request."""
    try:
        async with _http_client(shared) as client:
            response = await client.post(
                url, content=body, headers=headers, timeout=timeout_seconds
            )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise failure_from_http_error(target, exc, secrets, timeout_seconds) from None
    if not response.is_success:
        raise failure_from_response(target, response, secrets)


# --------------------------------------------------------------------------- retries


class RetryPolicy(BaseModel):
    """How often and how patiently to try; the module's docstring explains the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts, the first included.")
    initial_delay: float = Field(default=1.0, ge=0, le=3600, description="Seconds; retry 1's cap.")
    factor: float = Field(default=4.0, ge=1, le=10, description="Growth of the cap per retry.")
    max_delay: float = Field(
        default=60.0, ge=0, le=3600, description="Seconds; caps every wait, Retry-After included."
    )

    def delay_before_retry(
        self, retry: int, retry_after: float | None, rng: random.Random
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 is the second attempt)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return rng.uniform(
            0.0, min(self.max_delay, self.initial_delay * self.factor ** (retry - 1))
        )


DEFAULT_RETRY_POLICY = RetryPolicy()

Outcome = Literal["delivered", "rejected", "exhausted"]


@dataclass(frozen=True)
class DeliveryAttempt:
    """One call of ``send``: when, after how long a wait, and its error (``None``: delivered)."""

    number: int
    started_at: datetime
    finished_at: datetime
    waited_seconds: float
    error: DeliveryFailed | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "waited_seconds": round(self.waited_seconds, 3),
            "error": self.error.reason if self.error else None,
            "transient": self.error.transient if self.error else None,
        }


@dataclass(frozen=True)
class DeliveryResult:
    """``delivered``; ``rejected``: a permanent failure stopped it; ``exhausted``: every
    attempt failed transiently."""

    outcome: Outcome
    attempts: tuple[DeliveryAttempt, ...]

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    @property
    def last_error(self) -> DeliveryFailed | None:
        return self.attempts[-1].error if self.attempts else None

    def to_dict(self) -> dict[str, Any]:
        last = self.last_error
        return {
            "outcome": self.outcome,
            "attempt_count": self.attempt_count,
            "last_error": last.reason if last else None,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
        }


def _utc_now() -> datetime:
    return datetime.now(UTC)


_JITTER = random.Random()  # noqa: S311 - spreads retries in time; nothing secret depends on it


async def deliver(
    channel: AlertChannel,
    message: AlertMessage,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], datetime] = _utc_now,
    rng: random.Random | None = None,
) -> DeliveryResult:
    """Send ``message`` through ``channel``, retrying transient failures per ``policy``.

    Only :class:`DeliveryFailed` counts as a failed attempt; any other exception is a bug
    and propagates, as does cancellation.
    """
    jitter = rng or _JITTER
    attempts: list[DeliveryAttempt] = []
    waited = 0.0
    for number in range(1, policy.max_attempts + 1):
        started_at = clock()
        try:
            await channel.send(message)
        except DeliveryFailed as failure:
            attempts.append(DeliveryAttempt(number, started_at, clock(), waited, failure))
            logger.warning(
                "alert delivery attempt failed",
                extra={
                    "channel": type(channel).__name__,
                    "rule": message.rule,
                    "fingerprint": message.fingerprint,
                    "attempt": number,
                    "transient": failure.transient,
                    "reason": failure.reason,
                },
            )
            if not failure.transient:
                return DeliveryResult("rejected", tuple(attempts))
            if number < policy.max_attempts:
                waited = policy.delay_before_retry(number, failure.retry_after, jitter)
                await sleep(waited)
        else:
            attempts.append(DeliveryAttempt(number, started_at, clock(), waited, None))
            return DeliveryResult("delivered", tuple(attempts))
    return DeliveryResult("exhausted", tuple(attempts))
