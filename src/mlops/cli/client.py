"""The CLI's client side: talks to a running service with ``MLOPS_URL`` and ``MLOPS_API_KEY``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8000"
_STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)  # a followed log may be quiet for long
FAILURE = 1
USAGE_ERROR = 2


class ApiClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None) -> None:
        self.base_url = (base_url or os.environ.get("MLOPS_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("MLOPS_API_KEY")

    def request(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """The JSON answer; a refusal is printed and exits (a 404 returns None if missing_ok)."""
        headers = kwargs.pop("headers", {})
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        try:
            response = httpx.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=30.0, **kwargs
            )
        except httpx.HTTPError as exc:
            typer.secho(f"cannot reach {self.base_url}: {exc}", fg="red", err=True)
            raise typer.Exit(FAILURE) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            typer.secho(describe_problem(response), fg="red", err=True)
            # A request the service refuses as invalid is a usage error of the command.
            raise typer.Exit(USAGE_ERROR if response.status_code in (400, 422) else FAILURE)
        return response.json() if response.content else None

    def stream_text(self, path: str, **kwargs: Any) -> Iterator[str]:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        try:
            with httpx.stream(
                "GET", f"{self.base_url}{path}", headers=headers, timeout=_STREAM_TIMEOUT, **kwargs
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    typer.secho(describe_problem(response), fg="red", err=True)
                    raise typer.Exit(FAILURE)
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            typer.secho(f"cannot reach {self.base_url}: {exc}", fg="red", err=True)
            raise typer.Exit(FAILURE) from exc


def describe_problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    lines = [f"HTTP {response.status_code} {body.get('title', '')}: {body.get('detail', '')}"]
    for error in body.get("errors", []):
        lines.append(f"  {error.get('field')}: {error.get('message')}")
    if body.get("request_id"):
        lines.append(f"  request id: {body['request_id']}")
    return "\n".join(lines)
