"""Banks of known pictures and their alerts: list, add (an upload or a catalog id), remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import Core, require_token
from app.api.forms import files, text_field
from app.api.schemas import UNKNOWN_ID, UPLOAD_ERRORS, WRITE_ERRORS, error
from app.runtime import Runtime
from ingest.alerts import Alert
from search.banks import BANK_NAME, ENTRY_ID, Added
from search.query import QueryError

router = APIRouter()
write = [Depends(require_token)]
ENTRY_FIELDS = ("note", "link", "added_by")
BankName = Annotated[
    str,
    Path(
        description="the bank's name (lower-case letters, digits, - and _)",
        pattern=BANK_NAME.pattern,
    ),
]
EntryId = Annotated[
    str,
    Path(
        description="the entry's id (a UUID)",
        pattern=ENTRY_ID.pattern,
        json_schema_extra={"format": "uuid"},
    ),
]


@router.get("/banks", summary="Every bank with its number of entries")
def banks(core: Core) -> dict[str, Any]:
    return {"banks": [{"bank": name, "entries": n} for name, n in core.banks.names()]}


@router.get("/banks/{bank}", summary="A bank's entries, most recently added first")
def bank(bank: BankName, core: Core) -> dict[str, Any]:
    return {"bank": bank, "entries": [e.as_dict() for e in core.banks.entries(bank)]}


@router.post(
    "/banks/{bank}/entries",
    status_code=201,
    dependencies=write,
    summary="Add a picture to a bank (an upload or a catalog id), matched against the catalog",
    description=(
        "multipart/form-data: `image` (a file) or `image_id` (a catalog id, whose stored "
        "original is banked), plus optional `note`, `link` (the fact check) and `added_by`. "
        "Creates the bank if needed. 201 with the entry and the alerts it raised (every catalog "
        "image that is this picture); 200 when the picture was banked already (its membership "
        "of this bank is set)."
    ),
    responses={
        **UPLOAD_ERRORS,
        **WRITE_ERRORS,
        **UNKNOWN_ID,
        200: {"description": "the picture was banked already"},
    },
)
async def add(bank: BankName, request: Request, core: Core) -> Response:
    async with request.form() as form:
        uploads = files(form, "image")
        image_id = text_field(form, "image_id")
        fields = {name: text_field(form, name) or "" for name in ENTRY_FIELDS}
        if len(uploads) + (image_id is not None) != 1:
            raise QueryError("Send exactly one of `image` (a file) and `image_id` (a catalog id).")
        data = await uploads[0].read() if uploads else b""
        name = (uploads[0].filename or "") if uploads else ""
    added, alerts = await run_in_threadpool(
        _bank, core, bank, data, name, image_id, fields["note"], fields["link"], fields["added_by"]
    )
    return JSONResponse(
        {
            "entry": added.entry.as_dict(),
            "new": added.new,
            "alerts": [a.as_dict() for a in alerts],
        },
        status_code=201 if added.new else 200,
    )


def _bank(
    core: Runtime,
    bank: str,
    data: bytes,
    name: str,
    image_id: str | None,
    note: str,
    link: str,
    added_by: str,
) -> tuple[Added, list[Alert]]:
    if image_id is not None:
        data, _ = core.catalog.image_bytes(image_id.strip().lower(), "original")
        name = str(core.catalog.record(image_id.strip().lower()).payload.get("title") or "")
    result = core.alerts.bank(
        bank, data, note=note, link=link, added_by=added_by or "api", file=name
    )
    core.alerts.deliver(linger_s=0)  # one pass; failed deliveries wait for the next run
    return result


@router.delete(
    "/banks/{bank}/entries/{entry_id}",
    dependencies=write,
    summary="Take an entry out of a bank (out of its last bank, it is deleted)",
    responses={**WRITE_ERRORS, 404: error("no such entry in this bank")},
)
def remove(bank: BankName, entry_id: EntryId, core: Core) -> dict[str, Any]:
    entry = core.banks.remove(bank, entry_id.lower(), catalog=core.index)
    return {"removed": entry.id, "bank": bank, "banks": [m.bank for m in entry.banks]}


@router.get("/alerts", summary="Banked pictures found in the catalog, most recent first")
def alerts(
    core: Core,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    bank: Annotated[str | None, Query(pattern=BANK_NAME.pattern)] = None,
) -> dict[str, Any]:
    return {"alerts": [a.as_dict() for a in core.alert_store.recent(limit, bank=bank)]}
