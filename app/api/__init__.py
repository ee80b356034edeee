"""The HTTP API under /api, served with the UI on one port by one process (`imgsearch serve`).

FastAPI routers over the same application layer as the page and the CLI: search.py (search,
check), images.py (add, record, files, delete, stats), banks.py (banks, entries, alerts),
health.py. Errors are JSON `{"error": "one sentence"}` from the one error table
(app/errors.py): 400 for a file that is not an image, 401/403 for a missing or wrong token on
writes, 404 for an unknown id, 405 with `Allow`, 413 above the upload limit (limits.py, before
the body is read), 422 for a malformed request, 503 when the index or the model is unavailable.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from app.api import banks, health, images, search
from app.api.deps import ApiContext
from app.api.failures import install_failures
from app.api.limits import MULTIPART_SLACK, BodyLimit, too_large_sentence
from app.api.openapi import install_openapi
from app.api.schemas import error
from app.runtime import Runtime, shared_runtime
from config import Settings

PREFIX = "/api"


def create_api(
    settings: Settings,
    runtime: Callable[[], Runtime] | None = None,
    loading: Callable[[], bool] | None = None,
) -> FastAPI:
    """The API app (mounted at /api); `runtime` gives the process's shared Runtime."""
    app = FastAPI(
        title="imgsearch API",
        description=(
            "Have we seen this picture, or an edited copy, and where was it first published? "
            "Search by image, image URL, catalog id or text; add and delete images."
        ),
        version="1",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        responses={
            422: error("a malformed request"),
            503: error("the index or the model is unavailable"),
        },
    )
    app.state.context = ApiContext(
        settings,
        runtime or (lambda: shared_runtime(settings)),
        loading or (lambda: False),
    )
    limit_mb = settings.app.max_upload_mb
    app.add_middleware(
        BodyLimit,
        limit=limit_mb * 1024 * 1024 + MULTIPART_SLACK,
        sentence=too_large_sentence(limit_mb),
    )
    routers = (search.router, images.router, banks.router, health.router)
    install_failures(app, limit_mb, routers)
    for router in routers:
        app.include_router(router)
    context = app.state.context

    def text_loaded() -> bool | None:
        """Whether the text model loaded (it may be off for want of its files); None: loading."""
        if not settings.text.enabled:
            return False
        if context.loading():
            return None
        return context.runtime().clip is not None

    install_openapi(app, text=text_loaded)
    return app
