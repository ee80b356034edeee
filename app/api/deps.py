"""What the routes depend on: the process's Runtime, the settings, the write token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.runtime import Runtime
from config import Settings


@dataclass(frozen=True)
class ApiContext:
    """Held in `app.state.context`: how a request reaches the core."""

    settings: Settings
    runtime: Callable[[], Runtime]
    loading: Callable[[], bool]  # True while the models and the index are still loading


def context(request: Request) -> ApiContext:
    """The API's context (set by create_api)."""
    found: ApiContext = request.app.state.context
    return found


def runtime(request: Request) -> Runtime:
    """The process's shared Runtime."""
    return context(request).runtime()


# A route's parameter `core: Core` is the process's Runtime.
Core = Annotated[Runtime, Depends(runtime)]


def require_token(request: Request) -> None:
    """Writes need the bearer token when IMGSEARCH_API__TOKEN is set (401 none, 403 wrong)."""
    secret = context(request).settings.api.token
    if secret is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise StarletteHTTPException(401, headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), secret.get_secret_value().encode()):
        raise StarletteHTTPException(403)
