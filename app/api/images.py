"""The catalog's images: add (the ingestion pipeline), record, files, delete; and the counts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import Core, require_token
from app.api.forms import one_file, text_field
from app.api.schemas import UNKNOWN_ID, UPLOAD_ERRORS, WRITE_ERRORS
from ingest.manual import ManualImage, add_image

router = APIRouter()
write = [Depends(require_token)]
CAPTION_FIELDS = ("title", "description", "source_uri", "published_at", "category")
ImageId = Annotated[
    str, Path(description="the image's catalog id (a UUID)", json_schema_extra={"format": "uuid"})
]


@router.post(
    "/images",
    status_code=201,
    dependencies=write,
    summary="Add an image by hand (same pipeline as the daily job)",
    description=(
        "multipart/form-data: `image` plus optional `title`, `description`, `source_uri`, "
        "`published_at`, `category`. 201 with the id when new; 200 when the image was "
        "already in the catalog (this place is added to its timeline)."
    ),
    responses={
        **UPLOAD_ERRORS,
        **WRITE_ERRORS,
        200: {"description": "already in the catalog"},
    },
)
async def add(request: Request, core: Core) -> Response:
    async with request.form() as form:
        upload = one_file(form, "image")
        image = ManualImage(
            data=await upload.read(), **{name: text_field(form, name) for name in CAPTION_FIELDS}
        )
    added = await run_in_threadpool(add_image, core.pipeline, image)
    return JSONResponse(
        {"id": added.id, "sha256": added.sha256, "status": added.status},
        status_code=201 if added.new else 200,
    )


@router.get("/images/{image_id}", summary="An image's payload and timeline", responses=UNKNOWN_ID)
def record(image_id: ImageId, core: Core) -> dict[str, Any]:
    return core.catalog.record(image_id).as_dict()


@router.get(
    "/images/{image_id}/thumbnail",
    summary="The thumbnail (JPEG)",
    response_class=Response,
    responses={**UNKNOWN_ID, 200: {"content": {"image/jpeg": {}}}},
)
def thumbnail(image_id: ImageId, core: Core) -> Response:
    data, media_type = core.catalog.image_bytes(image_id, "thumbnail")
    return Response(data, media_type=media_type)


@router.get(
    "/images/{image_id}/original",
    summary="The original file as ingested",
    response_class=Response,
    responses={**UNKNOWN_ID, 200: {"content": {"image/*": {}}}},
)
def original(image_id: ImageId, core: Core) -> Response:
    data, media_type = core.catalog.image_bytes(image_id, "original")
    return Response(data, media_type=media_type)


@router.delete(
    "/images/{image_id}",
    dependencies=write,
    summary="Delete an image: its point, original and thumbnail (a takedown)",
    responses={**WRITE_ERRORS, **UNKNOWN_ID},
)
def delete(image_id: ImageId, core: Core) -> dict[str, Any]:
    deleted = core.catalog.delete(image_id)
    return {"deleted": deleted.id, "sha256": deleted.payload.get("sha256")}


@router.get("/stats", summary="Counts per source, category, month, format and size")
def stats(core: Core) -> dict[str, Any]:
    return core.catalog.stats().as_dict()
