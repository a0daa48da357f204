"""The published OpenAPI document: FastAPI's, with the errors every operation can answer.

FastAPI documents its own validation errors as ``HTTPValidationError``, a shape this API does
not send (``certifier/api/errors.py`` answers every 4xx as ``ErrorOut``), and it cannot know what
the middlewares answer before any route runs: 400 for a malformed ``Content-Length``, 413 for a
body over 1 MiB, 422 for a NUL byte in the query or a JSON body nested too deep. Those apply to
every operation, so they are added to every operation here, all with the ``ErrorOut`` schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from certifier.api.schemas import ErrorOut, FieldError

_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
COMMON_ERRORS = {
    "400": "malformed request, e.g. an invalid Content-Length header",
    "413": "request body over 1 MiB",
    "422": "invalid path, query or body: `errors` lists the fields; also a NUL byte in the "
           "path or query, or a JSON body nested too deep",
}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document described above (built once, cached)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            app.openapi_schema = with_common_errors(document)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def with_common_errors(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorOut, FieldError):
        schemas[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}")
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                known = responses.get(status)
                if known is None or _is_fastapi_validation(known):
                    responses[status] = {"description": description, "content": {
                        "application/json": {"schema": _ERROR_REF}}}
    return document


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1] in _FASTAPI_VALIDATION
