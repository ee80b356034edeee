"""Requests into the application's terms: a search's Query, an upload's bytes and fields.

A search comes as JSON (`SearchBody`) or as a form (multipart with files, or URL-encoded);
both end in `search.query.build_query`, as the page's and the CLI's searches do.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from app.api.schemas import SearchBody
from search.query import Filters, Query, QueryError, build_query, classify

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")


def is_form(request: Request) -> bool:
    """multipart/form-data (files) or a URL-encoded form (`curl -d positive=ID`)."""
    return request.headers.get("content-type", "").lower().startswith(FORM_TYPES)


def validation_sentence(errors: Any) -> str:
    """One sentence for pydantic's (or FastAPI's) list of validation errors."""
    if not errors:
        return "The request is malformed."
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "is not valid")).rstrip(".")
    return f"{where}: {message}." if where else f"The request is malformed: {message}."


def query_from_json(body: bytes, default_top_k: int) -> Query:
    """The Query of a JSON search body."""
    try:
        parsed = SearchBody.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise QueryError(validation_sentence(exc.errors())) from None
    f = parsed.filter
    return build_query(
        positive=classify([*([parsed.url] if parsed.url else []), *parsed.positive]),
        negative=classify(parsed.negative),
        text=parsed.text,
        filters=Filters(tuple(f.source), tuple(f.category), f.since, f.until, f.words),
        top_k=parsed.top_k or default_top_k,
        offset=parsed.offset,
        strategy=parsed.strategy,
        threshold=parsed.threshold,
    )


async def query_from_form(form: FormData, default_top_k: int) -> Query:
    """The Query of a form search (files in `image` and `negative_image`)."""
    images: list[str | bytes] = [await f.read() for f in files(form, "image")]
    negative_images: list[str | bytes] = [await f.read() for f in files(form, "negative_image")]
    return build_query(
        positive=classify([*images, *texts(form, "url"), *texts(form, "positive")]),
        negative=classify([*negative_images, *texts(form, "negative")]),
        text=text_field(form, "text"),
        filters=Filters(
            tuple(texts(form, "source")),
            tuple(texts(form, "category")),
            text_field(form, "since"),
            text_field(form, "until"),
            text_field(form, "words"),
        ),
        top_k=int_field(form, "top_k", default_top_k),
        offset=int_field(form, "offset", 0),
        strategy=text_field(form, "strategy"),
        threshold=text_field(form, "threshold"),
    )


def files(form: FormData, name: str) -> list[UploadFile]:
    """Every file sent in a multipart field (QueryError for a text value)."""
    values = form.getlist(name)
    for value in values:
        if not isinstance(value, UploadFile):
            raise QueryError(f"`{name}` must be a file upload.")
    return [v for v in values if isinstance(v, UploadFile)]


def one_file(form: FormData, name: str) -> UploadFile:
    """The one file of a multipart field (QueryError for none or several)."""
    found = files(form, name)
    if len(found) != 1:
        raise QueryError(f"Send exactly one file in the multipart field `{name}`.")
    return found[0]


def texts(form: FormData, name: str) -> list[str]:
    """Every non-empty text value of a field (QueryError for a file)."""
    values = form.getlist(name)
    if any(not isinstance(v, str) for v in values):
        raise QueryError(f"`{name}` must be a text field, not a file.")
    return [str(v) for v in values if str(v).strip()]


def text_field(form: FormData, name: str) -> str | None:
    """A field sent at most once."""
    values = texts(form, name)
    if len(values) > 1:
        raise QueryError(f"Send `{name}` once.")
    return values[0].strip() if values else None


def int_field(form: FormData, name: str, default: int) -> int:
    """A whole-number field, or its default."""
    value = text_field(form, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"`{name}` must be a whole number.") from None
