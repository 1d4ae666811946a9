"""Channel configurations at rest and on show: stored as JSON with their secrets in clear (the
database is trusted with them: they are not encrypted), shown with every secret masked."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from mlops.monitoring.alerting.models import AlertChannelRecord
from mlops.monitoring.alerting.schemas import ChannelOut
from mlops.monitoring.channels import (
    ChannelConfig,
    EmailConfig,
    SlackConfig,
    WebhookConfig,
    parse_channel_config,
)
from mlops.monitoring.delivery import REDACTED


def stored_config(config: ChannelConfig) -> dict[str, Any]:
    """The configuration as JSON with its secrets in clear, to be stored."""
    return dict(_revealed(config.model_dump(mode="python")))


def _revealed(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # URLs


def masked_config(config: ChannelConfig) -> dict[str, Any]:
    """The configuration as shown: secrets as ``***``; a Slack URL (its path is the token)
    as its host; a webhook URL without its query, which may carry a token."""
    shown: dict[str, Any] = json.loads(config.model_dump_json())
    if isinstance(config, WebhookConfig):
        shown["secret"] = REDACTED
        shown["headers"] = {name: REDACTED for name in config.headers}
        parts = urlsplit(str(config.url))
        shown["url"] = urlunsplit(parts._replace(query=REDACTED if parts.query else ""))
    elif isinstance(config, SlackConfig):
        parts = urlsplit(config.webhook_url.get_secret_value())
        shown["webhook_url"] = f"{parts.scheme}://{parts.hostname}/{REDACTED}"
    elif isinstance(config, EmailConfig) and config.password is not None:
        shown["password"] = REDACTED
    return shown


def channel_config(record: AlertChannelRecord) -> ChannelConfig:
    return parse_channel_config(record.config)


def channel_out(record: AlertChannelRecord) -> ChannelOut:
    return ChannelOut(
        name=record.name,
        kind=record.kind,
        description=record.description,
        config=masked_config(channel_config(record)),
        created_by=record.created_by,
        created_at=record.created_at,
    )
