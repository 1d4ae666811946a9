"""Alert channels against a real local HTTP receiver and a real local SMTP server (aiosmtpd),
both on 127.0.0.1, started and stopped by each test's fixtures."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from mlops.monitoring.channels import (
    EmailChannel,
    EmailConfig,
    SlackChannel,
    SlackConfig,
    WebhookChannel,
    WebhookConfig,
    channel_from_config,
    parse_channel_config,
    sign,
    verify_signature,
)
from mlops.monitoring.delivery import (
    AlertMessage,
    DeliveryResult,
    RetryPolicy,
    alert_fingerprint,
    deliver,
    parse_retry_after,
)
from tests.conftest import free_port

WEBHOOK_SECRET = "whsec-0123456789-abcdefghij"
HEADER_TOKEN = "Bearer header-token-ABCDEFGHIJKL"
SLACK_TOKEN_PATH = "/services/T0000/B0000/slackTokenXYZ123456789"
SMTP_USER = "alerts"
SMTP_PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "wrong-password-987654321"
FAST = RetryPolicy(max_attempts=4, initial_delay=0.01, factor=2, max_delay=0.05)
STARTED = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
LABELS = {"deployment": "churn-model", "variant": "b", "feature": "tenure"}


def alert(**changes: Any) -> AlertMessage:
    fields: dict[str, Any] = {
        "rule": "psi-drift",
        "severity": "critical",
        "status": "firing",
        "title": "Feature drift on churn-model",
        "summary": "PSI of tenure rose above its threshold.",
        "figure": "psi",
        "value": 0.3141,
        "threshold": 0.2,
        "labels": LABELS,
        "started_at": STARTED,
        "fingerprint": alert_fingerprint("psi-drift", LABELS),
        "link": "https://mlops.example.com/alerts/1",
    }
    return AlertMessage(**(fields | changes))


class RecordedSleeps:
    """An injected sleep that really sleeps and remembers how long."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)


# --------------------------------------------------------------------------- HTTP receiver


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class Receiver:
    """Records every POST; answers the scripted replies in order, then 200."""

    def __init__(self) -> None:
        self.url = ""  # set once the server is bound
        self.requests: list[Request] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()

    def script(self, reply: Reply, times: int = 1) -> None:
        with self._lock:
            self._replies.extend([reply] * times)

    def take(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._replies.popleft() if self._replies else Reply()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = receiver.take(Request(self.path, headers, body, time.monotonic()))
            time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()  # joins the handler threads
        thread.join(timeout=5)
    assert not thread.is_alive()


def webhook(receiver_url: str, **changes: Any) -> WebhookConfig:
    fields: dict[str, Any] = {
        "url": f"{receiver_url}/hooks/alerts",
        "secret": WEBHOOK_SECRET,
        "headers": {"Authorization": HEADER_TOKEN},
    }
    return WebhookConfig(**(fields | changes))


# --------------------------------------------------------------------------- webhook


async def test_webhook_posts_the_message_signed(receiver: Receiver) -> None:
    message = alert()
    result = await deliver(WebhookChannel(webhook(receiver.url)), message, FAST)

    assert result.delivered and result.attempt_count == 1
    [request] = receiver.requests
    assert request.path == "/hooks/alerts"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == HEADER_TOKEN
    body = request.json()
    assert body["rule"] == "psi-drift" and body["status"] == "firing"
    assert body["started_at"] == "2026-01-31T12:00:00Z"
    assert body["resolved_at"] is None
    assert body["labels"] == LABELS and body["value"] == 0.3141 and body["threshold"] == 0.2
    assert body["fingerprint"] == message.fingerprint

    timestamp = request.headers["x-mlops-timestamp"]
    signature = request.headers["x-mlops-signature"]
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert abs(int(timestamp) - time.time()) < 60
    # The documented scheme, computed independently of the module.
    signed = timestamp.encode() + b"." + request.body
    expected = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert verify_signature(WEBHOOK_SECRET, timestamp, request.body, signature)
    assert not verify_signature("another-secret-0123456789", timestamp, request.body, signature)
    assert not verify_signature(WEBHOOK_SECRET, timestamp, request.body + b" ", signature)
    assert not verify_signature(WEBHOOK_SECRET, int(timestamp) + 1, request.body, signature)


def test_signature_freshness_window() -> None:
    body = b'{"rule":"psi-drift"}'
    stamp = 1_800_000_000
    signature = sign(WEBHOOK_SECRET, str(stamp), body)
    assert verify_signature(WEBHOOK_SECRET, stamp, body, signature, now=stamp + 299)
    assert not verify_signature(WEBHOOK_SECRET, stamp, body, signature, now=stamp + 301)
    assert not verify_signature(WEBHOOK_SECRET, stamp, body, signature, now=stamp - 301)
    assert verify_signature(WEBHOOK_SECRET, stamp, body, signature, 10, now=stamp + 9)
    assert not verify_signature(WEBHOOK_SECRET, stamp, body, signature, 10, now=stamp + 11)
    # A correctly signed request captured long ago is refused against the real clock.
    assert not verify_signature(WEBHOOK_SECRET, stamp - 3600 * 24 * 365 * 5, body, signature)
    assert not verify_signature(WEBHOOK_SECRET, "12a", body, signature, now=stamp)


async def test_webhook_retries_503_then_delivers(receiver: Receiver) -> None:
    receiver.script(Reply(503, body=b"upstream restarting"), times=2)
    sleeps = RecordedSleeps()
    result = await deliver(WebhookChannel(webhook(receiver.url)), alert(), FAST, sleep=sleeps)

    assert result.outcome == "delivered"
    assert result.attempt_count == 3 == len(receiver.requests)
    first, second, third = result.attempts
    assert first.error is not None and first.error.transient
    assert "HTTP 503" in first.error.reason and "upstream restarting" in first.error.reason
    assert third.error is None and result.last_error is None
    assert [a.number for a in result.attempts] == [1, 2, 3]
    assert all(a.started_at <= a.finished_at for a in result.attempts)
    # Full jitter: each wait within its exponential cap (0.01 s, then 0.02 s).
    assert len(sleeps.delays) == 2
    assert 0 <= sleeps.delays[0] <= 0.01 and 0 <= sleeps.delays[1] <= 0.02
    assert second.waited_seconds == sleeps.delays[0]
    # Every attempt is signed afresh and verifies.
    for request in receiver.requests:
        headers = request.headers
        assert verify_signature(
            WEBHOOK_SECRET, headers["x-mlops-timestamp"], request.body, headers["x-mlops-signature"]
        )


async def test_webhook_429_retry_after_is_capped(receiver: Receiver) -> None:
    receiver.script(Reply(429, headers={"Retry-After": "30"}))
    sleeps = RecordedSleeps()
    result = await deliver(WebhookChannel(webhook(receiver.url)), alert(), FAST, sleep=sleeps)

    assert result.delivered and result.attempt_count == 2
    assert sleeps.delays == [FAST.max_delay]
    first, second = receiver.requests
    assert second.received_at - first.received_at >= FAST.max_delay


async def test_webhook_retry_after_below_the_cap_is_waited_exactly(receiver: Receiver) -> None:
    receiver.script(Reply(503, headers={"Retry-After": "1"}))
    policy = RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=5)
    sleeps = RecordedSleeps()
    result = await deliver(WebhookChannel(webhook(receiver.url)), alert(), policy, sleep=sleeps)

    assert result.delivered
    assert sleeps.delays == [1.0]  # not a jittered wait under initial_delay
    first, second = receiver.requests
    assert second.received_at - first.received_at >= 1.0


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sat, 31 Jan 2026 12:00:20 GMT", now) == 20.0
    assert parse_retry_after("Sat, 31 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def test_webhook_400_fails_at_once(receiver: Receiver) -> None:
    receiver.script(Reply(400, body=b'{"error": "unknown field severity"}'), times=3)
    sleeps = RecordedSleeps()
    result = await deliver(WebhookChannel(webhook(receiver.url)), alert(), FAST, sleep=sleeps)

    assert result.outcome == "rejected"
    assert result.attempt_count == 1 == len(receiver.requests)
    assert sleeps.delays == []
    assert result.last_error is not None and not result.last_error.transient
    assert "HTTP 400" in result.last_error.reason
    assert "unknown field severity" in result.last_error.reason


async def test_nothing_listening_is_transient_and_exhausts_the_attempts() -> None:
    config = webhook(f"http://127.0.0.1:{free_port()}")
    result = await deliver(WebhookChannel(config), alert(), FAST)

    assert result.outcome == "exhausted"
    assert result.attempt_count == FAST.max_attempts
    assert all(a.error is not None and a.error.transient for a in result.attempts)
    assert result.last_error is not None
    assert "could not be reached" in result.last_error.reason
    assert result.to_dict()["attempt_count"] == FAST.max_attempts


async def test_a_slow_receiver_times_out_transiently(receiver: Receiver) -> None:
    receiver.script(Reply(200, delay=0.6))
    config = webhook(receiver.url, timeout_seconds=0.1)
    result = await deliver(WebhookChannel(config), alert(), RetryPolicy(max_attempts=1))

    assert result.outcome == "exhausted" and result.attempt_count == 1
    assert result.last_error is not None and result.last_error.transient
    assert "did not answer within 0.1 s" in result.last_error.reason


# --------------------------------------------------------------------------- Slack


def slack(receiver_url: str) -> SlackConfig:
    return SlackConfig(
        webhook_url=f"{receiver_url}{SLACK_TOKEN_PATH}", channel="#ml-alerts", username="MLOps"
    )


async def test_slack_payload_for_firing_and_resolved(receiver: Receiver) -> None:
    channel = SlackChannel(slack(receiver.url))
    resolved = alert(status="resolved", resolved_at=STARTED + timedelta(minutes=42))
    assert (await deliver(channel, alert(), FAST)).delivered
    assert (await deliver(channel, resolved, FAST)).delivered

    firing_request, resolved_request = receiver.requests
    assert firing_request.path == SLACK_TOKEN_PATH
    firing = firing_request.json()
    assert firing["text"].startswith("[FIRING][critical] psi-drift — churn-model")
    assert firing["channel"] == "#ml-alerts" and firing["username"] == "MLOps"
    [attachment] = firing["attachments"]
    assert attachment["color"] == "#d92d20"
    heading, facts, context = attachment["blocks"]
    assert heading["type"] == "section" and "*Firing*" in heading["text"]["text"]
    assert "Feature drift on churn-model" in heading["text"]["text"]
    texts = [f["text"] for f in facts["fields"]]
    assert "*Figure*\npsi = 0.3141 (threshold 0.2)" in texts
    assert any("deployment=churn-model" in text for text in texts)
    context_text = context["elements"][0]["text"]
    assert "Started 2026-01-31T12:00:00Z" in context_text
    assert "<https://mlops.example.com/alerts/1|Open in MLOps>" in context_text
    assert "Resolved" not in json.dumps(firing)

    done = resolved_request.json()
    assert done["text"].startswith("[RESOLVED][critical] psi-drift — churn-model")
    assert done["attachments"][0]["color"] == "#12b76a"
    heading, _, context = done["attachments"][0]["blocks"]
    assert "*Resolved*" in heading["text"]["text"] and "Firing" not in heading["text"]["text"]
    assert "Resolved 2026-01-31T12:42:00Z" in context["elements"][0]["text"]


async def test_slack_escapes_markup(receiver: Receiver) -> None:
    await deliver(SlackChannel(slack(receiver.url)), alert(title="p < 0.05 & <!channel>"), FAST)
    heading = receiver.requests[0].json()["attachments"][0]["blocks"][0]["text"]["text"]
    assert "p &lt; 0.05 &amp; &lt;!channel&gt;" in heading


# --------------------------------------------------------------------------- secrets


async def test_secrets_stay_out_of_errors_logs_and_reprs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Receivers that echo what they were sent put the secrets into their answers.
    echoed = f"bad signature for {WEBHOOK_SECRET} with {HEADER_TOKEN}".encode()
    receiver.script(Reply(401, body=echoed))
    receiver.script(Reply(404, body=f"no_service {receiver.url}{SLACK_TOKEN_PATH}".encode()))
    receiver.script(Reply(410, body=f"channel_is_archived {SLACK_TOKEN_PATH}".encode()))
    caplog.set_level(logging.WARNING, logger="mlops.monitoring.delivery")

    webhook_result = await deliver(WebhookChannel(webhook(receiver.url)), alert(), FAST)
    slack_channel = SlackChannel(slack(receiver.url))
    slack_results = [await deliver(slack_channel, alert(), FAST) for _ in range(2)]

    reasons = [
        result.last_error.reason
        for result in (webhook_result, *slack_results)
        if result.last_error is not None
    ]
    assert len(reasons) == 3
    assert "HTTP 401" in reasons[0] and "***" in reasons[0]
    assert "HTTP 404" in reasons[1] and "HTTP 410" in reasons[2]
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "HTTP 401" in logged
    everything = " ".join(reasons) + logged + repr(webhook_result) + repr(slack_results)
    for secret in (WEBHOOK_SECRET, HEADER_TOKEN, "slackTokenXYZ123456789", SMTP_PASSWORD):
        assert secret not in everything

    configs = [
        webhook(receiver.url),
        slack(receiver.url),
        EmailConfig(
            host="127.0.0.1",
            sender="alerts@example.com",
            recipients=["oncall@example.com"],
            username=SMTP_USER,
            password=SMTP_PASSWORD,
        ),
    ]
    shown = " ".join(f"{c!r} {c} {c.model_dump()} {c.model_dump_json()}" for c in configs)
    assert "**********" in shown
    for secret in (WEBHOOK_SECRET, HEADER_TOKEN, "slackTokenXYZ123456789", SMTP_PASSWORD):
        assert secret not in shown


def test_validation_errors_do_not_echo_secrets() -> None:
    bad_url = "hooks.slack.com/services/T0000/B0000/notAnUrlButSecret"
    with pytest.raises(ValidationError) as caught:
        parse_channel_config({"kind": "slack", "webhook_url": bad_url})
    assert "notAnUrlButSecret" not in str(caught.value)
    assert [e["loc"] for e in caught.value.errors()] == [("slack", "webhook_url")]
    with pytest.raises(ValidationError) as short:
        parse_channel_config({"kind": "webhook", "url": "http://x.test", "secret": "tooShortKey"})
    assert "tooShortKey" not in str(short.value)
    assert "at least 16 characters" in str(short.value)


# --------------------------------------------------------------------------- configs, message


def test_configs_name_the_bad_fields() -> None:
    def locations(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
        with pytest.raises(ValidationError) as caught:
            parse_channel_config(data)
        return [error["loc"] for error in caught.value.errors()]

    assert locations({"kind": "webhook", "url": "ftp://x.test", "secret": WEBHOOK_SECRET}) == [
        ("webhook", "url")
    ]
    assert locations(
        {
            "kind": "webhook",
            "url": "http://x.test",
            "secret": WEBHOOK_SECRET,
            "headers": {"X-MLOps-Signature": "forged"},
        }
    ) == [("webhook", "headers")]
    assert locations(
        {
            "kind": "email",
            "host": "smtp.test",
            "sender": "a@b.test",
            "recipients": ["ok@b.test", "nope"],
        }
    ) == [("email", "recipients", 1)]
    assert locations(
        {"kind": "email", "host": "smtp.test", "sender": "a@b.test", "recipients": []}
    ) == [("email", "recipients")]
    with pytest.raises(ValidationError, match="password is required"):
        parse_channel_config(
            {
                "kind": "email",
                "host": "smtp.test",
                "sender": "a@b.test",
                "recipients": ["c@b.test"],
                "username": "u",
            }
        )
    with pytest.raises(ValidationError, match="'webhook', 'slack', 'email'"):
        parse_channel_config({"kind": "pager"})


def test_factory_builds_each_kind() -> None:
    assert isinstance(
        channel_from_config(
            parse_channel_config(
                {"kind": "webhook", "url": "http://x.test", "secret": WEBHOOK_SECRET}
            )
        ),
        WebhookChannel,
    )
    assert isinstance(
        channel_from_config(
            parse_channel_config({"kind": "slack", "webhook_url": "https://h.test/s"})
        ),
        SlackChannel,
    )
    email_config = {
        "kind": "email",
        "host": "smtp.test",
        "sender": "a@b.test",
        "recipients": ["c@b.test"],
    }
    channel = channel_from_config(parse_channel_config(email_config))
    assert isinstance(channel, EmailChannel)
    assert channel.config.effective_port == 587


def test_message_timestamps_are_utc() -> None:
    paris = timezone(timedelta(hours=2))
    message = alert(started_at=datetime(2026, 6, 1, 14, 30, tzinfo=paris))
    assert json.loads(message.to_json())["started_at"] == "2026-06-01T12:30:00Z"
    with pytest.raises(ValidationError, match="time zone"):
        alert(started_at=datetime(2026, 6, 1, 14, 30))
    with pytest.raises(ValidationError, match="resolved_at is required"):
        alert(status="resolved")
    with pytest.raises(ValidationError, match="severity"):
        alert(severity="fatal")
    assert alert_fingerprint("r", {"a": "1", "b": "2"}) == alert_fingerprint(
        "r", {"b": "2", "a": "1"}
    )
    assert alert_fingerprint("r", {"a": "1"}) != alert_fingerprint("r", {"a": "2"})


async def test_a_channel_test_message_reaches_the_receiver(receiver: Receiver) -> None:
    channel = channel_from_config(webhook(receiver.url))
    result = await deliver(channel, AlertMessage.test_message(), FAST)
    assert result.delivered
    assert receiver.requests[0].json()["status"] == "test"


# --------------------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: list[str]
    content: bytes
    over_tls: bool
    authenticated: bool

    def parsed(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: deque[str] = deque()  # answers to DATA before accepting
        self.refused_recipients: dict[str, str] = {}  # address -> answer to RCPT TO

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refused_recipients:
            return self.refused_recipients[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.popleft()
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                recipients=list(envelope.rcpt_tos),
                content=bytes(envelope.original_content or b""),
                over_tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 2.0.0 Accepted"


@dataclass(frozen=True)
class SmtpServer:
    handler: RecordingHandler
    port: int


def _authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=valid, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    controllers: list[Controller] = []

    def start(**options: Any) -> SmtpServer:
        handler = RecordingHandler()
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return SmtpServer(handler, port)

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()


@dataclass(frozen=True)
class Certificate:
    pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SMTP server")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    (folder / "cert.pem").write_text(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(pem, folder / "cert.pem", folder / "key.pem")


def email_config(port: int, **changes: Any) -> EmailConfig:
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "plain",
        "sender": "MLOps <alerts@mlops.test>",
        "recipients": ["oncall@team.test", "ml@team.test"],
        "timeout_seconds": 5,
    }
    return EmailConfig(**(fields | changes))


async def test_email_is_sent_with_text_and_html(smtp_server: Callable[..., SmtpServer]) -> None:
    server = smtp_server()
    result = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)

    assert result.delivered and result.attempt_count == 1
    [received] = server.handler.received
    assert received.mail_from == "alerts@mlops.test"
    assert received.recipients == ["oncall@team.test", "ml@team.test"]
    message = received.parsed()
    assert message["Subject"] == "[FIRING][critical] psi-drift — churn-model"
    assert message["From"] == "MLOps <alerts@mlops.test>"
    assert message["To"] == "oncall@team.test, ml@team.test"
    assert message["X-MLOps-Fingerprint"] == alert().fingerprint
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, markup = text_part.get_content(), html_part.get_content()
    assert "Firing: Feature drift on churn-model" in text
    assert "Figure: psi = 0.3141 (threshold 0.2)" in text
    assert "Started: 2026-01-31T12:00:00Z" in text
    assert "<h2>Firing: Feature drift on churn-model</h2>" in markup
    assert "deployment=churn-model" in markup


async def test_email_resolved_subject_and_html_escaping(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    message = alert(
        status="resolved", resolved_at=STARTED + timedelta(hours=1), title="<b>p</b> & q"
    )
    assert (await deliver(EmailChannel(email_config(server.port)), message, FAST)).delivered
    parsed = server.handler.received[0].parsed()
    assert parsed["Subject"] == "[RESOLVED][critical] psi-drift — churn-model"
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert "&lt;b&gt;p&lt;/b&gt; &amp; q" in html_part.get_content()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_email_login(smtp_server: Callable[..., SmtpServer]) -> None:
    server = smtp_server(authenticator=_authenticate, auth_required=True, auth_require_tls=False)

    anonymous = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)
    assert anonymous.outcome == "rejected"  # 530 authentication required

    good = email_config(server.port, username=SMTP_USER, password=SMTP_PASSWORD)
    assert (await deliver(EmailChannel(good), alert(), FAST)).delivered
    [received] = server.handler.received
    assert received.authenticated

    bad = email_config(server.port, username=SMTP_USER, password=WRONG_PASSWORD)
    result = await deliver(EmailChannel(bad), alert(), FAST)
    assert result.outcome == "rejected" and result.attempt_count == 1
    assert result.last_error is not None and not result.last_error.transient
    assert "refused the login: 535" in result.last_error.reason
    assert WRONG_PASSWORD not in repr(result) + result.last_error.reason
    assert len(server.handler.received) == 1


async def test_email_451_is_retried(smtp_server: Callable[..., SmtpServer]) -> None:
    server = smtp_server()
    server.handler.replies.extend(["451 4.3.0 Mailbox busy, try again"] * 2)
    result = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)

    assert result.delivered and result.attempt_count == 3
    first = result.attempts[0].error
    assert first is not None and first.transient and "451" in first.reason
    assert len(server.handler.received) == 1


async def test_email_550_is_permanent(smtp_server: Callable[..., SmtpServer]) -> None:
    server = smtp_server()
    server.handler.replies.extend(["550 5.7.1 Message rejected as spam"] * 3)
    result = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)

    assert result.outcome == "rejected" and result.attempt_count == 1
    assert result.last_error is not None and "550 5.7.1" in result.last_error.reason
    assert server.handler.replies  # the two later refusals were never asked for


async def test_email_refused_recipients(smtp_server: Callable[..., SmtpServer]) -> None:
    server = smtp_server()
    server.handler.refused_recipients["ml@team.test"] = "550 5.1.1 No such user"
    result = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)

    # One recipient got it: retrying would send it to them twice.
    assert result.outcome == "rejected" and result.attempt_count == 1
    assert result.last_error is not None
    assert "refused ml@team.test (550)" in result.last_error.reason
    assert [r.recipients for r in server.handler.received] == [["oncall@team.test"]]

    server.handler.refused_recipients["oncall@team.test"] = "450 4.2.1 Mailbox full"
    server.handler.refused_recipients["ml@team.test"] = "450 4.2.1 Mailbox full"
    result = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)
    assert result.outcome == "exhausted"  # nobody got it, and 450 may pass later
    assert result.last_error is not None
    assert "refused every recipient: oncall@team.test (450" in result.last_error.reason


async def test_email_server_down_is_transient() -> None:
    result = await deliver(EmailChannel(email_config(free_port())), alert(), FAST)
    assert result.outcome == "exhausted" and result.attempt_count == FAST.max_attempts
    assert result.last_error is not None and "could not be reached" in result.last_error.reason


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_email_over_tls(
    security: str, smtp_server: Callable[..., SmtpServer], certificate: Certificate
) -> None:
    context = certificate.server_context()
    if security == "ssl":
        server = smtp_server(ssl_context=context)
    else:
        server = smtp_server(tls_context=context, require_starttls=True)

    trusted = email_config(server.port, security=security, trusted_ca_pem=certificate.pem)
    assert (await deliver(EmailChannel(trusted), alert(), FAST)).delivered
    [received] = server.handler.received
    assert received.over_tls

    untrusted = email_config(server.port, security=security)  # the system's CAs only
    result = await deliver(EmailChannel(untrusted), alert(), FAST)
    assert result.outcome == "rejected" and result.attempt_count == 1
    assert result.last_error is not None and "TLS failed" in result.last_error.reason
    assert len(server.handler.received) == 1


async def test_plain_client_against_starttls_only_server_is_refused(
    smtp_server: Callable[..., SmtpServer], certificate: Certificate
) -> None:
    server = smtp_server(tls_context=certificate.server_context(), require_starttls=True)
    result: DeliveryResult = await deliver(EmailChannel(email_config(server.port)), alert(), FAST)
    assert result.outcome == "rejected"  # 530 Must issue a STARTTLS command first
    assert server.handler.received == []
