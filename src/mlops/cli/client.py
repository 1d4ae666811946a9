"""The CLI's client side: talks to a running service with ``MLOPS_URL`` and ``MLOPS_API_KEY``."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None) -> None:
        self.base_url = (base_url or os.environ.get("MLOPS_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("MLOPS_API_KEY")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        try:
            response = httpx.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=30.0, **kwargs
            )
        except httpx.HTTPError as exc:
            typer.secho(f"cannot reach {self.base_url}: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
        if response.status_code >= 400:
            typer.secho(describe_problem(response), fg="red", err=True)
            raise typer.Exit(1)
        return response.json() if response.content else None


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
