"""The OpenAPI schema: problem+json error responses and each operation's required permission."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from mlops.core.errors import PROBLEM_MEDIA_TYPE
from mlops.security.auth import SECURITY_SCHEMES, RequirePermission, get_principal

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "example": "urn:mlops:problem:validation-error"},
        "title": {"type": "string", "example": "Unprocessable Content"},
        "status": {"type": "integer", "example": 422},
        "detail": {"type": "string", "example": "Invalid request: name"},
        "instance": {"type": "string", "example": "/api/v1/auth/api-keys"},
        "request_id": {"type": "string", "example": "5f0c2b1e9d7a4c3e8b6a1d2f3e4c5b6a"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "field": {"type": "string", "example": "name"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

_COMMON_ERRORS = {
    "422": "Invalid input; `errors` names each field",
    "429": "Rate limit exceeded; see Retry-After",
    "500": "Internal error; quote the request id",
}
_AUTH_ERRORS = {
    "401": "Missing, invalid or expired credentials",
    "403": "The principal lacks the required permission",
}


def walk_dependants(dependant: Dependant) -> list[Dependant]:
    found = [dependant]
    for child in dependant.dependencies:
        found.extend(walk_dependants(child))
    return found


def route_permission(route: APIRoute) -> str | None:
    for dependant in walk_dependants(route.dependant):
        if isinstance(dependant.call, RequirePermission):
            return str(dependant.call.permission)
    return None


def route_authenticated(route: APIRoute) -> bool:
    return any(
        d.call is get_principal or isinstance(d.call, RequirePermission)
        for d in walk_dependants(route.dependant)
    )


def _problem_ref() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    routes = {
        (context.path, method.lower()): context.original_route
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        for method in context.methods or ()
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((path, method))
            if route is None:
                continue
            errors = dict(_COMMON_ERRORS)
            if route_authenticated(route):
                errors.update(_AUTH_ERRORS)
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                permission = route_permission(route)
                operation["x-required-permission"] = permission
                note = (
                    f"Requires the permission `{permission}`."
                    if permission
                    else "Requires credentials."
                )
                operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
            responses = operation.setdefault("responses", {})
            for code, description in errors.items():
                existing = responses.get(code, {})
                responses[code] = {
                    "description": existing.get("description", description),
                    "content": _problem_ref(),
                }
            for code, response in responses.items():
                if code.startswith(("4", "5")) and "content" not in response:
                    response["content"] = _problem_ref()
    app.openapi_schema = schema
    return schema
