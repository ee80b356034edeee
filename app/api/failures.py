"""Every failure of the API as JSON `{"error": "one sentence"}`, from the one error table.

The table (app/errors.py) gives each core error its status and sentence; here are only the
HTTP layer's own cases: unknown paths, methods not allowed (with every allowed method in
`Allow`), malformed requests, and anything unexpected (a 500 whose detail goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import get_route_path

from app.api.forms import validation_sentence
from app.api.limits import too_large_sentence
from app.errors import KNOWN, describe, outcome, sentence

log = logging.getLogger("imgsearch.api")
MESSAGES = {
    401: "This endpoint needs the API token: send `Authorization: Bearer <IMGSEARCH_API__TOKEN>`.",
    403: "The API token is wrong.",
    405: "That method is not allowed on this endpoint.",
}


def error(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer."""
    return JSONResponse({"error": text}, status_code=status, headers=headers)


def allowed_methods(routers: Sequence[APIRouter], request: Request) -> list[str]:
    """Every method some route of these routers answers at the request's path."""
    path = get_route_path(request.scope)
    methods: set[str] = set()
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(path):
                methods |= route.methods or set()
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return sorted(methods)


def install_failures(app: FastAPI, limit_mb: int, routers: Sequence[APIRouter]) -> None:
    """Register the handlers that turn every failure into one JSON sentence."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 413:
            text = too_large_sentence(limit_mb)
        elif exc.status_code == 404:
            text = f"There is no endpoint {request.url.path}."
        elif exc.status_code == 405:
            text = MESSAGES[405]
            headers["Allow"] = ", ".join(allowed_methods(routers, request))
        elif exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return error(422, "The request body could not be parsed.")
        else:
            text = MESSAGES.get(exc.status_code) or sentence(str(exc.detail))
        return error(exc.status_code, text, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, validation_sentence(exc.errors()))

    async def known(request: Request, exc: Exception) -> JSONResponse:
        row = outcome(exc)
        if row is not None and row.unavailable:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error(row.status if row else 500, describe(exc))

    for kind in KNOWN:
        app.add_exception_handler(kind, known)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "Something went wrong on the server; its log has the details.")
