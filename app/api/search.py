"""POST /search (every query mode) and POST /check (the copy verdict for one image)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import Core, context
from app.api.forms import (
    int_field,
    is_form,
    one_file,
    query_from_form,
    query_from_json,
)
from app.api.schemas import UNKNOWN_ID, UPLOAD_ERRORS

router = APIRouter()


@router.post(
    "/search",
    summary="Search by image(s), URL, catalog ids or text",
    description=(
        "multipart/form-data: `image` (one or more files), `negative_image`, `url`, "
        "`positive`/`negative` (ids or URLs), `text`, `source`, `category`, `since`, "
        "`until`, `words`, `top_k`, `offset`, `strategy`. Or JSON: `{url | positive: "
        "[ids or urls], negative, text, filter: {source, category, since, until, words}, "
        "top_k, offset, strategy}`. The copy verdict is included when the query is "
        "exactly one image."
    ),
    responses={**UPLOAD_ERRORS, **UNKNOWN_ID},
)
async def search(request: Request, core: Core) -> dict[str, Any]:
    default_top_k = context(request).settings.search.top_k
    if is_form(request):
        async with request.form() as form:
            query = await query_from_form(form, default_top_k)
    else:
        query = query_from_json(await request.body(), default_top_k)
    result = await run_in_threadpool(core.search.search, query)
    return result.as_dict()


@router.post(
    "/check",
    summary="The copy verdict for one image (as `imgsearch check --json`)",
    responses=UPLOAD_ERRORS,
)
async def check(request: Request, core: Core) -> dict[str, Any]:
    async with request.form() as form:
        upload = one_file(form, "image")
        name, data = upload.filename or "image", await upload.read()
        top_k = int_field(form, "top_k", context(request).settings.search.top_k)
    result = await run_in_threadpool(lambda: core.search.search_bytes(data, top_k=top_k))
    return result.as_check(name)
