"""Alert channels: a webhook signed with HMAC, a Slack-compatible incoming webhook, and email.

Every channel sends an :class:`~mlops.monitoring.delivery.AlertMessage`. Configurations are
pydantic models told apart by ``kind`` (:data:`ChannelConfig`, parsed by
:func:`parse_channel_config`); :func:`channel_from_config` builds the channel. A channel's
``send`` makes one attempt and raises :class:`~mlops.monitoring.delivery.DeliveryFailed`;
retrying is :func:`mlops.monitoring.delivery.deliver`'s job.

Webhook signature, for receivers
    Each POST carries ``X-MLOps-Timestamp`` (Unix seconds, fresh on every attempt) and
    ``X-MLOps-Signature: sha256=<hex>``, the HMAC-SHA256, keyed with the shared secret, of
    the bytes ``f"{timestamp}.{body}"``, body being the raw request body exactly as received.
    A receiver recomputes it, compares in constant time and refuses a timestamp more than
    five minutes from its own clock, so that a captured request cannot be replayed later:
    :func:`verify_signature` does all three.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import re
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from mlops.monitoring.delivery import (
    STATUS_WORDS,
    AlertChannel,
    AlertMessage,
    DeliveryFailed,
    Status,
    failure_from_smtp_error,
    post_with_failures,
)

TIMESTAMP_HEADER = "X-MLOps-Timestamp"
SIGNATURE_HEADER = "X-MLOps-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
USER_AGENT = "mlops-alerts/1"
MIN_WEBHOOK_SECRET_LENGTH = 16
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        "Host",
        "User-Agent",
        TIMESTAMP_HEADER,
        SIGNATURE_HEADER,
    )
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# --------------------------------------------------------------------------- configurations

_CONFIG = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def _timeout_field() -> Any:
    return Field(default=10.0, gt=0, le=120, description="Seconds per attempt.")


class WebhookConfig(BaseModel):
    """POST the message as JSON, signed with HMAC-SHA256 (see the module's docstring)."""

    model_config = _CONFIG

    kind: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    secret: SecretStr = Field(description="Shared HMAC key, at least 16 characters.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra headers, e.g. Authorization; values are secret."
    )
    timeout_seconds: float = _timeout_field()

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("must not hold credentials; put them in headers")
        return url

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < MIN_WEBHOOK_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_WEBHOOK_SECRET_LENGTH} characters")
        return secret

    @field_validator("headers")
    @classmethod
    def _usable_headers(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name} is set by the channel itself")
            if any(c in value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"the value of {name} holds a line break")
        return headers


class SlackConfig(BaseModel):
    """A Slack (or Mattermost, Rocket.Chat, ...) incoming webhook. Its URL is the credential."""

    model_config = _CONFIG

    kind: Literal["slack"] = "slack"
    webhook_url: SecretStr
    channel: str | None = Field(default=None, max_length=80, description="Override, if allowed.")
    username: str | None = Field(default=None, max_length=80)
    timeout_seconds: float = _timeout_field()

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://hooks.slack.com/services/...")
        return url


def _email_address(value: str) -> str:
    address = parseaddr(value)[1]
    local, _, domain = address.rpartition("@")
    broken = any(c.isspace() for c in address) or any(c in value for c in "\r\n")
    if not local or not domain or broken:
        raise ValueError("must be an email address such as alerts@example.com")
    return value


EmailAddress = Annotated[str, AfterValidator(_email_address)]


class EmailConfig(BaseModel):
    """Email over SMTP: ``starttls`` (port 587 by default), ``ssl`` (implicit TLS, 465) or
    ``plain`` (25). Certificates are verified against the system's CAs, or ``trusted_ca_pem``
    for a private CA."""

    model_config = _CONFIG

    kind: Literal["email"] = "email"
    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535, description="Default by security.")
    security: Literal["starttls", "ssl", "plain"] = "starttls"
    sender: EmailAddress = Field(description="From, e.g. 'MLOps <alerts@example.com>'.")
    recipients: list[EmailAddress] = Field(min_length=1, max_length=100)
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    trusted_ca_pem: str | None = Field(default=None, description="PEM of a private CA.")
    timeout_seconds: float = _timeout_field()

    @field_validator("trusted_ca_pem")
    @classmethod
    def _loadable_ca(cls, pem: str | None) -> str | None:
        if pem is not None:
            try:
                ssl.create_default_context(cadata=pem)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError("is not a PEM certificate") from exc
        return pem

    @model_validator(mode="after")
    def _login_is_complete(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise ValueError(f"{missing} is required when the other of username/password is set")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "ssl": 465, "plain": 25}[self.security]

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.trusted_ca_pem)


ChannelConfig = Annotated[WebhookConfig | SlackConfig | EmailConfig, Field(discriminator="kind")]
_CHANNEL_CONFIG: TypeAdapter[ChannelConfig] = TypeAdapter(
    ChannelConfig, config=ConfigDict(hide_input_in_errors=True)
)


def parse_channel_config(data: Mapping[str, Any]) -> ChannelConfig:
    """A configuration from JSON-like data; a ``ValidationError`` names each bad field."""
    return _CHANNEL_CONFIG.validate_python(data)


# --------------------------------------------------------------------------- signatures


def _key(secret: str | SecretStr) -> bytes:
    return (secret.get_secret_value() if isinstance(secret, SecretStr) else secret).encode()


def sign(secret: str | SecretStr, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">``."""
    mac = hmac.new(_key(secret), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str | SecretStr,
    timestamp: str | int,
    body: bytes | str,
    signature: str,
    tolerance_seconds: float = SIGNATURE_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is authentic and fresh: ``signature`` is the HMAC of
    ``timestamp`` and the raw ``body`` under ``secret``, and ``timestamp`` lies within
    ``tolerance_seconds`` of ``now`` (default: this machine's clock)."""
    stamp = str(timestamp).strip()
    if not re.fullmatch(r"[0-9]{1,12}", stamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance_seconds:
        return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign(secret, stamp, raw).encode(), signature.strip().encode())


# --------------------------------------------------------------------------- channels


class WebhookChannel:
    def __init__(
        self,
        config: WebhookConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._client = client
        self._clock = clock
        self._target = f"webhook {config.url.host}:{config.url.port}"
        self._secrets = [config.secret.get_secret_value()] + [
            value.get_secret_value() for value in config.headers.values()
        ]

    async def send(self, message: AlertMessage) -> None:
        body = message.to_json()
        timestamp = str(int(self._clock()))
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        headers |= {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.config.secret, timestamp, body),
        }
        await post_with_failures(
            self._client,
            str(self.config.url),
            body,
            headers,
            target=self._target,
            secrets=self._secrets,
            timeout_seconds=self.config.timeout_seconds,
        )


_SLACK_COLOURS: dict[str, str] = {
    "critical": "#d92d20",
    "warning": "#f79009",
    "info": "#2e90fa",
    "resolved": "#12b76a",
    "test": "#98a2b3",
}
_SLACK_ICONS: dict[Status, str] = {
    "firing": ":rotating_light:",
    "resolved": ":white_check_mark:",
    "test": ":wrench:",
}
_SLACK_SECTION_LIMIT = 3000  # characters of a section's text


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: AlertMessage, config: SlackConfig) -> dict[str, Any]:
    """An incoming-webhook payload: ``text`` for notifications and old clients, then an
    attachment coloured by severity (green once resolved) holding the blocks."""
    fallback = f"{message.headline}: {message.title}"
    heading = f"{_SLACK_ICONS[message.status]} *{STATUS_WORDS[message.status]}*: "
    section = heading + _slack_escape(message.title)
    if message.summary:
        section += "\n" + _slack_escape(message.summary)
    facts = dict(message.facts())
    fields = [
        {"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(facts[name])}"}
        for name in ("Severity", "Rule", "Figure", "Labels")
        if name in facts
    ]
    context = [f"Started {facts['Started']}"]
    if "Resolved" in facts:
        context.append(f"Resolved {facts['Resolved']}")
    if message.link:
        context.append(f"<{message.link}|Open in MLOps>")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": section[:_SLACK_SECTION_LIMIT]}},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
    ]
    colour_key = message.status if message.status != "firing" else message.severity
    payload: dict[str, Any] = {
        "text": _slack_escape(fallback),
        "attachments": [
            {"color": _SLACK_COLOURS[colour_key], "fallback": fallback, "blocks": blocks}
        ],
    }
    if config.channel:
        payload["channel"] = config.channel
    if config.username:
        payload["username"] = config.username
    return payload


class SlackChannel:
    def __init__(self, config: SlackConfig, *, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client
        url = config.webhook_url.get_secret_value()
        # The path is the token; a receiver echoing only it must not leak it either.
        self._secrets = [url, urlsplit(url).path if len(urlsplit(url).path) > 1 else ""]

    async def send(self, message: AlertMessage) -> None:
        body = json.dumps(slack_payload(message, self.config)).encode()
        await post_with_failures(
            self._client,
            self.config.webhook_url.get_secret_value(),
            body,
            {"Content-Type": "application/json", "User-Agent": USER_AGENT},
            target="Slack webhook",
            secrets=self._secrets,
            timeout_seconds=self.config.timeout_seconds,
        )


def email_for(message: AlertMessage, config: EmailConfig) -> EmailMessage:
    """A multipart/alternative email: plain text, then HTML."""
    email = EmailMessage()
    email["Subject"] = message.headline
    email["From"] = config.sender
    email["To"] = ", ".join(config.recipients)
    email["Date"] = format_datetime(datetime.now(UTC))
    email["Message-ID"] = make_msgid(domain=parseaddr(config.sender)[1].rpartition("@")[2])
    email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to alerts
    email["X-MLOps-Fingerprint"] = message.fingerprint
    heading = f"{STATUS_WORDS[message.status]}: {message.title}"
    facts = message.facts() + ([("Link", str(message.link))] if message.link else [])
    text = [heading, ""] + ([message.summary, ""] if message.summary else [])
    text += [f"{name}: {value}" for name, value in facts]
    email.set_content("\n".join(text) + "\n")
    rows = "".join(
        f'<tr><th align="left">{html.escape(name)}</th><td>{html.escape(value)}</td></tr>'
        for name, value in facts
    )
    summary = f"<p>{html.escape(message.summary)}</p>" if message.summary else ""
    email.add_alternative(
        f"<html><body><h2>{html.escape(heading)}</h2>{summary}<table>{rows}</table></body></html>",
        subtype="html",
    )
    return email


class EmailChannel:
    """Sends with the standard library's ``smtplib`` in a worker thread. A thread cannot be
    interrupted: a cancelled delivery finishes its attempt, bounded by ``timeout_seconds``
    per network operation."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self._target = f"SMTP server {config.host}:{config.effective_port}"
        self._secrets = [config.password.get_secret_value()] if config.password else []

    async def send(self, message: AlertMessage) -> None:
        await asyncio.to_thread(self._send_blocking, email_for(message, self.config))

    def _send_blocking(self, email: EmailMessage) -> None:
        try:
            refused = self._transmit(email)
        except (smtplib.SMTPException, OSError) as exc:
            timeout = self.config.timeout_seconds
            raise failure_from_smtp_error(self._target, exc, self._secrets, timeout) from None
        if refused:
            listed = ", ".join(f"{address} ({code})" for address, (code, _) in refused.items())
            raise DeliveryFailed(
                f"{self._target} refused {listed}; the other recipients got the message",
                transient=False,
            )

    def _transmit(self, email: EmailMessage) -> dict[str, tuple[int, bytes]]:
        config = self.config
        host, port, timeout = config.host, config.effective_port, config.timeout_seconds
        client = (
            smtplib.SMTP_SSL(host, port, timeout=timeout, context=config.tls_context())
            if config.security == "ssl"
            else smtplib.SMTP(host, port, timeout=timeout)
        )
        try:
            client.ehlo()
            if config.security == "starttls":
                client.starttls(context=config.tls_context())
                client.ehlo()
            if config.username and config.password:
                client.login(config.username, config.password.get_secret_value())
            return client.send_message(
                email, from_addr=parseaddr(config.sender)[1], to_addrs=config.recipients
            )
        finally:
            # The message is accepted once DATA is answered; a failing QUIT must not turn
            # that into a failure, or a retry would send it twice.
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()


def channel_from_config(
    config: ChannelConfig, *, http_client: httpx.AsyncClient | None = None
) -> AlertChannel:
    """The channel a configuration describes; ``http_client`` is shared by HTTP channels
    (default: a client per attempt)."""
    if isinstance(config, WebhookConfig):
        return WebhookChannel(config, client=http_client)
    if isinstance(config, SlackConfig):
        return SlackChannel(config, client=http_client)
    return EmailChannel(config)
