"""Make the OpenAPI document tell the truth about the answers the API gives.

Checked by schemathesis with every check enabled (tests/service/test_schemathesis.py):
- **Tokens.** Write operations need the bearer token and may answer 401; reads need it only with
  ROBAUDIT_READS_REQUIRE_TOKEN=1, so otherwise their security requirement is optional.
- **422.** A request that does not fit the schema gets one line, ``{"detail": "body.eps: ..."}``,
  like every other refusal, instead of FastAPI's list of error objects; every 422 is documented
  as that shape.
- **400.** Operations with a body document the answer to a body that does not parse.
- **405.** ``Allow`` lists every method the path has, not just those of the first route that matched;
  numeric ids are matched as ``{id:int}``, so ``GET /evaluations/import`` is a 405, not a bad id.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from robaudit.backend.app.body_guard import WRITE_METHODS

MESSAGE_REF = {"$ref": "#/components/schemas/Message"}
UNAUTHORIZED = {"description": "Missing or wrong API token", "content": {"application/json": {"schema": MESSAGE_REF}}}
MALFORMED = {"description": "The body is not valid JSON (or not valid multipart)",
             "content": {"application/json": {"schema": MESSAGE_REF}}}
UNPROCESSABLE = {"description": "The request does not fit the schema, or the values are refused: one line says why",
                 "content": {"application/json": {"schema": MESSAGE_REF}}}


def one_line(exc: RequestValidationError, most: int = 3) -> str:
    """The schema errors as ``where: what; where: what`` on one line (``checkpoint_id: Field required``).

    A union field fails once per alternative (``batch_size`` is an integer or "auto"), so a few errors
    are shown, not only the first."""
    errors = exc.errors()
    if not errors:
        return "the request does not fit the schema"
    parts = []
    for error in errors[:most]:
        loc = [str(part) for part in error.get("loc", ())]
        where = ".".join(loc[1:] if len(loc) > 1 and loc[0] == "body" else loc) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - most} more)" if len(errors) > most else ""
    return "; ".join(parts) + more


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": one_line(exc)}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return await http_exception_handler(request, exc)


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    return sorted(methods)


def _document(app: FastAPI, reads_require_token: bool) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                         routes=app.routes)
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("400", MALFORMED)
            if "422" in responses:
                responses["422"] = {**UNPROCESSABLE, "description": responses["422"].get("description")
                                    or UNPROCESSABLE["description"]}
                responses["422"]["content"] = UNPROCESSABLE["content"]
            if not operation.get("security"):
                continue
            if method.upper() in WRITE_METHODS or reads_require_token:
                responses.setdefault("401", UNAUTHORIZED)
            else:   # open reads: the token is accepted (it shows share links), never required
                operation["security"] = [{}, *operation["security"]]
    components = schema.get("components", {}).get("schemas", {})
    if "#/components/schemas/HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
    app.openapi_schema = schema
    return schema


def apply(app: FastAPI, *, reads_require_token: bool) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.openapi = lambda: _document(app, reads_require_token)  # type: ignore[method-assign]
