"""Domain errors, the one table that maps them to HTTP statuses, and the problem+json renderer.

Domain code raises the errors below and never names a status code. Every error the service
answers with is ``application/problem+json`` (RFC 9457).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from mlops.observability.context import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:mlops:problem:"


Model = TypeVar("Model", bound=BaseModel)


def parse_json_body(model: type[Model], raw: bytes) -> Model:
    """A raw JSON body validated against ``model``, for routes that read their own body;
    failures are the 422 FastAPI's own body validation gives, naming the field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


class DomainError(Exception):
    """Base of every error the domain raises; its HTTP status lives in ``ERROR_STATUS``."""

    slug = "error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers) if headers else None


class NotFound(DomainError):
    slug = "not-found"


class Conflict(DomainError):
    slug = "conflict"


_REQUEST_PARTS = frozenset({"body", "query", "path", "header", "cookie"})


def field_error(
    location: Sequence[str | int], message: str, kind: str | None = None
) -> dict[str, Any]:
    """One entry of a problem's ``errors``: where (``loc``), the field's dotted name, and what."""
    parts = [str(part) for part in location]
    named = parts[1:] if len(parts) > 1 and parts[0] in _REQUEST_PARTS else parts
    entry: dict[str, Any] = {"loc": parts, "field": ".".join(named), "message": message}
    if kind:
        entry["type"] = kind
    return entry


class InvalidFields(DomainError):
    """Input that is well-formed but breaks rules; each problem names its field."""

    slug = "validation-error"

    def __init__(
        self, problems: Sequence[tuple[Sequence[str | int], str]], detail: str | None = None
    ) -> None:
        errors = [field_error(location, message) for location, message in problems]
        fields = ", ".join(error["field"] for error in errors)
        super().__init__(detail or f"Invalid request: {fields}", errors=errors)


class InvalidInput(InvalidFields):
    """One invalid field."""

    def __init__(self, detail: str, *, field: str | Sequence[str | int]) -> None:
        location = [field] if isinstance(field, str) else list(field)
        super().__init__([(location, detail)], detail=detail)


class Unauthenticated(DomainError):
    slug = "unauthenticated"

    def __init__(self, detail: str = "Authentication required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer, ApiKey realm="mlops"'})


class PermissionDenied(DomainError):
    slug = "permission-denied"


class RateLimited(DomainError):
    slug = "rate-limited"


class PayloadTooLarge(DomainError):
    slug = "payload-too-large"


class ServiceUnavailable(DomainError):
    slug = "service-unavailable"


class NotSupported(DomainError):
    """The request is valid, but what would serve it (say, an orchestrator backend) lacks the
    capability."""

    slug = "not-supported"


class UpstreamFailed(DomainError):
    """A service this one relies on (say, an alert channel's receiver) failed the request;
    the detail says how, with no secret."""

    slug = "upstream-failed"


ERROR_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidFields: 422,
    Unauthenticated: 401,
    PermissionDenied: 403,
    RateLimited: 429,
    PayloadTooLarge: 413,
    ServiceUnavailable: 503,
    NotSupported: 501,
    UpstreamFailed: 502,
}


def status_of(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    instance: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = list(errors)
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    instance: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, slug=slug, instance=instance, errors=errors),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        field_error(
            error.get("loc", ()), error.get("msg", "invalid"), error.get("type", "value_error")
        )
        for error in exc.errors()
    ]


async def _domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(
        status_of(exc),
        exc.detail,
        slug=exc.slug,
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, DomainError):  # e.g. the body limit tripped while FastAPI parsed
        return await _domain_error_handler(request, exc.__cause__)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"Method {request.method} is not allowed on {request.url.path}"
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=exc.headers)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    fields = ", ".join(sorted({e["field"] for e in errors if e["field"]}))
    return problem_response(
        422,
        f"Invalid request: {fields}" if fields else "Invalid request",
        slug="validation-error",
        instance=request.url.path,
        errors=errors,
    )


def internal_error_response() -> JSONResponse:
    return problem_response(
        500,
        "The server failed to handle the request; quote the request id when reporting it.",
        slug="internal-error",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
