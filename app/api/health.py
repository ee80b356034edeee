"""GET /health: 200 only when the models and the index answer."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.deps import context
from app.api.failures import error
from app.api.schemas import error as documented
from app.errors import UNAVAILABLE, describe

log = logging.getLogger("imgsearch.api")
router = APIRouter()


@router.get(
    "/health",
    summary="200 only when the model and the index answer",
    responses={503: documented("the model or the index is unavailable, or still loading")},
)
def health(request: Request) -> Response:
    ctx = context(request)
    if ctx.loading():
        return error(503, "The model and the index are still loading.")
    core = ctx.runtime()
    try:
        _ = core.descriptors
        count = core.index.count()
    except UNAVAILABLE as exc:
        log.warning("health check failed: %s", exc)
        return error(503, describe(exc))
    return JSONResponse({"status": "ok", "images": count, "model": core.encoder.weights_label})
