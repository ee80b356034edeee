"""The HTTP API under /api, served with the UI on one port by one process (`imgsearch serve`).

FastAPI routes over the same search service, ingestion pipeline and Runtime as the page, so the
embedded index keeps its single client. Errors are JSON `{"error": "one sentence"}`: 400 for a
file that is not an image, 401/403 for a missing or wrong token on writes, 404 for an unknown
id, 413 above the upload limit (checked against Content-Length before the body is read),
422 for a malformed request, 503 when the index or the model is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime import Runtime, close_shared_runtimes, shared_runtime
from config import Settings
from embed.decode import DecodeError
from embed.descriptors import TextSearchUnavailable
from embed.encoder import WeightsUnavailable
from embed.sscd import SscdUnavailable
from ingest.manual import ManualAddError, ManualImage, add_image
from ingest.pipeline import RunInProgress
from search.service import (
    STRATEGIES,
    FetchFailed,
    Filters,
    Query,
    QueryError,
    UnknownImage,
)
from store.images import StoreError
from store.index import IndexUnavailable

if TYPE_CHECKING:
    import streamlit as st

log = logging.getLogger("imgsearch.api")
PREFIX = "/api"
MULTIPART_SLACK = 64 * 1024  # form boundaries and fields around a file of the maximum size
UNAVAILABLE = (IndexUnavailable, WeightsUnavailable, SscdUnavailable, StoreError)
MESSAGES = {
    401: "This endpoint needs the API token: send `Authorization: Bearer <IMGSEARCH_API__TOKEN>`.",
    403: "The API token is wrong.",
    405: "That method is not allowed on this endpoint.",
}


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str


class FilterBody(BaseModel):
    """Payload filters of a JSON search."""

    model_config = ConfigDict(extra="forbid")

    source: list[str] = Field(default_factory=list, description="any of these sources")
    category: list[str] = Field(default_factory=list, description="any of these categories")
    since: str | None = Field(default=None, description="published on or after (ISO 8601)")
    until: str | None = Field(default=None, description="published on or before (ISO 8601)")
    words: str | None = Field(default=None, description="every word in the title")

    @field_validator("source", "category", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SearchBody(BaseModel):
    """A JSON search: examples by URL or catalog id, negatives, text, filters, paging."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="an image URL to search with")
    positive: list[str] = Field(default_factory=list, description="catalog ids or image URLs")
    negative: list[str] = Field(default_factory=list, description="catalog ids or image URLs")
    text: str | None = Field(default=None, description="words describing the picture (CLIP)")
    filter: FilterBody = Field(default_factory=FilterBody)
    top_k: int | None = Field(default=None, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    strategy: Literal["average_vector", "best_score"] = "average_vector"
    threshold: float | None = None


WARMUP_WAIT_S = 120.0  # a stop waits this long at most for the models to finish loading


class Warmup:
    """Loads the model and opens the index in the background when the server starts."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def loading(self) -> bool:
        """True while the first load is still running."""
        return self.thread is not None and self.thread.is_alive()

    def wait(self, timeout: float) -> None:
        """Wait for a load in flight to end: models' native threads must not outlive the
        interpreter (ONNX Runtime aborts the process if its session is torn down mid-load)."""
        if self.thread is not None:
            self.thread.join(timeout)

    def start(self, runtime: Runtime) -> None:
        """Warm `runtime` up, then start the in-app schedule where it belongs."""
        self.thread = threading.Thread(
            target=self._run, args=(runtime,), name="imgsearch-warmup", daemon=True
        )
        self.thread.start()

    def _run(self, runtime: Runtime) -> None:
        from app.worker import start_in_app_scheduler

        try:
            runtime.index.ensure_collection()
            _ = runtime.descriptors  # loads the models and checks them against the catalog's
            if not self.stopping.is_set():
                start_in_app_scheduler(runtime)
        except UNAVAILABLE as exc:  # /api/health and the page say why
            log.warning("not ready: %s", exc)


def create_api(
    settings: Settings,
    runtime: Callable[[], Runtime] | None = None,
    warmup: Warmup | None = None,
) -> FastAPI:
    """The API app (mounted at /api); `runtime` gives the process's shared Runtime."""
    get_runtime = runtime or (lambda: shared_runtime(settings))
    limit = settings.app.max_upload_mb * 1024 * 1024
    token = settings.api.token.get_secret_value().encode() if settings.api.token else None
    default_top_k = settings.search.top_k
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
            422: {"model": ErrorBody, "description": "a malformed request"},
            503: {"model": ErrorBody, "description": "the index or the model is unavailable"},
        },
    )
    app.add_middleware(
        BodyLimit,
        limit=limit + MULTIPART_SLACK,
        sentence=f"The upload is larger than the limit of {settings.app.max_upload_mb} MB.",
    )
    _install_error_handlers(app, settings)
    _install_openapi(app)

    def require_token(request: Request) -> None:
        """Writes need the bearer token when IMGSEARCH_API__TOKEN is set."""
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise StarletteHTTPException(401, headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token):
            raise StarletteHTTPException(403)

    write = [Depends(require_token)]
    image_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "the file is not a usable image"},
        413: {"model": ErrorBody, "description": "the upload is above the limit"},
    }

    @app.post(
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
        responses={**image_responses, 404: {"model": ErrorBody, "description": "unknown id"}},
    )
    async def search(request: Request) -> dict[str, Any]:
        if _is_form(request):
            async with request.form() as form:
                query = await _query_from_form(form, default_top_k)
        else:
            query = _query_from_json(await request.body(), default_top_k)
        result = await run_in_threadpool(lambda: get_runtime().search.search(query))
        return result.as_dict()

    @app.post(
        "/check",
        summary="The copy verdict for one image (as `imgsearch check --json`)",
        responses=image_responses,
    )
    async def check(request: Request) -> dict[str, Any]:
        async with request.form() as form:
            upload = _one_file(form, "image")
            data = await upload.read()
            top_k = _int_field(form, "top_k", default_top_k)
        result = await run_in_threadpool(
            lambda: get_runtime().search.search_bytes(data, top_k=top_k)
        )
        return result.as_check(upload.filename or "image")

    @app.post(
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
            **image_responses,
            200: {"description": "already in the catalog"},
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
        },
    )
    async def add(request: Request) -> Response:
        async with request.form() as form:
            upload = _one_file(form, "image")
            image = ManualImage(
                data=await upload.read(),
                **{
                    name: _text_field(form, name)
                    for name in ("title", "description", "source_uri", "published_at", "category")
                },
            )
        added = await run_in_threadpool(lambda: add_image(get_runtime().pipeline, image))
        return JSONResponse(
            {"id": added.id, "sha256": added.sha256, "status": added.status},
            status_code=201 if added.new else 200,
        )

    @app.get(
        "/images/{image_id}",
        summary="An image's payload and timeline",
        responses={404: {"model": ErrorBody}},
    )
    def record(image_id: str) -> dict[str, Any]:
        return get_runtime().search.record(image_id).as_dict()

    @app.get(
        "/images/{image_id}/thumbnail",
        summary="The thumbnail (JPEG)",
        response_class=Response,
        responses={404: {"model": ErrorBody}, 200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(image_id: str) -> Response:
        data, media_type = get_runtime().search.image_bytes(image_id, "thumbnail")
        return Response(data, media_type=media_type)

    @app.get(
        "/images/{image_id}/original",
        summary="The original file as ingested",
        response_class=Response,
        responses={404: {"model": ErrorBody}, 200: {"content": {"image/*": {}}}},
    )
    def original(image_id: str) -> Response:
        data, media_type = get_runtime().search.image_bytes(image_id, "original")
        return Response(data, media_type=media_type)

    @app.delete(
        "/images/{image_id}",
        dependencies=write,
        summary="Delete an image: its point, original and thumbnail (a takedown)",
        responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    )
    def delete(image_id: str) -> dict[str, Any]:
        record = get_runtime().search.delete(image_id)
        return {"deleted": record.id, "sha256": record.payload.get("sha256")}

    @app.get("/stats", summary="Counts per source, category, month, format and size")
    def stats() -> dict[str, Any]:
        return get_runtime().search.stats().as_dict()

    @app.get(
        "/health",
        summary="200 only when the model and the index answer",
        responses={503: {"model": ErrorBody}},
    )
    def health() -> Response:
        if warmup is not None and warmup.loading:
            return _error(503, "The model and the index are still loading.")
        runtime_ = get_runtime()
        try:
            _ = runtime_.descriptors
            count = runtime_.index.count()
        except UNAVAILABLE as exc:
            log.warning("health check failed: %s", exc)
            return _error(503, _sentence(exc))
        return JSONResponse(
            {"status": "ok", "images": count, "model": runtime_.encoder.weights_label}
        )

    return app


# -- request parsing ---------------------------------------------------------------------------
class _TooLarge(Exception):
    """The body went past the limit while it was being read."""


class BodyLimit:
    """413 as JSON above `limit` bytes: at once from Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, limit: int, sentence: str) -> None:
        self.app = app
        self.limit = limit
        self.sentence = sentence

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            # Answered before any of the body is read; the server then drops the connection.
            await _error(413, self.sentence)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except (_TooLarge, ExceptionGroup) as exc:
            if started or (isinstance(exc, ExceptionGroup) and not exc.subgroup(_TooLarge)):
                raise
            await _error(413, self.sentence)(scope, receive, send)


def _is_form(request: Request) -> bool:
    """multipart/form-data (files) or a URL-encoded form (`curl -d positive=ID`)."""
    kind = request.headers.get("content-type", "").lower()
    return kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))


def _query_from_json(body: bytes, default_top_k: int) -> Query:
    try:
        parsed = SearchBody.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise QueryError(_validation_sentence(exc.errors())) from None
    positive_ids, positive_urls = _split_examples(parsed.positive, "positive")
    negative_ids, negative_urls = _split_examples(parsed.negative, "negative")
    if parsed.url:
        positive_urls = (parsed.url, *positive_urls)
    f = parsed.filter
    return Query(
        urls=positive_urls,
        ids=positive_ids,
        negative_urls=negative_urls,
        negative_ids=negative_ids,
        text=parsed.text,
        filters=Filters(tuple(f.source), tuple(f.category), f.since, f.until, f.words),
        top_k=parsed.top_k or default_top_k,
        offset=parsed.offset,
        strategy=parsed.strategy,
        threshold=parsed.threshold,
    )


async def _query_from_form(form: FormData, default_top_k: int) -> Query:
    images = tuple([await f.read() for f in _files(form, "image")])
    negative_images = tuple([await f.read() for f in _files(form, "negative_image")])
    positive_ids, positive_urls = _split_examples(_texts(form, "positive"), "positive")
    negative_ids, negative_urls = _split_examples(_texts(form, "negative"), "negative")
    strategy = _text_field(form, "strategy") or "average_vector"
    if strategy not in STRATEGIES:
        raise QueryError(f"strategy must be one of {', '.join(STRATEGIES)}.")
    threshold = _text_field(form, "threshold")
    try:
        threshold_value = float(threshold) if threshold else None
    except ValueError:
        raise QueryError("threshold must be a number.") from None
    return Query(
        images=images,
        urls=(*_texts(form, "url"), *positive_urls),
        ids=positive_ids,
        negative_images=negative_images,
        negative_urls=negative_urls,
        negative_ids=negative_ids,
        text=_text_field(form, "text"),
        filters=Filters(
            tuple(_texts(form, "source")),
            tuple(_texts(form, "category")),
            _text_field(form, "since"),
            _text_field(form, "until"),
            _text_field(form, "words"),
        ),
        top_k=_int_field(form, "top_k", default_top_k),
        offset=_int_field(form, "offset", 0),
        strategy=strategy,  # checked against STRATEGIES above
        threshold=threshold_value,
    )


def _split_examples(values: list[str], name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(catalog ids, URLs) from a list that may hold both."""
    ids: list[str] = []
    urls: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith(("http://", "https://")):
            urls.append(text)
        elif text:
            ids.append(text)  # Query.check says which one is not an id
    return tuple(ids), tuple(urls)


def _files(form: FormData, name: str) -> list[UploadFile]:
    values = form.getlist(name)
    for value in values:
        if not isinstance(value, UploadFile):
            raise QueryError(f"`{name}` must be a file upload.")
    return [v for v in values if isinstance(v, UploadFile)]


def _one_file(form: FormData, name: str) -> UploadFile:
    files = _files(form, name)
    if len(files) != 1:
        raise QueryError(f"Send exactly one file in the multipart field `{name}`.")
    return files[0]


def _texts(form: FormData, name: str) -> list[str]:
    values = form.getlist(name)
    if any(not isinstance(v, str) for v in values):
        raise QueryError(f"`{name}` must be a text field, not a file.")
    return [str(v) for v in values if str(v).strip()]


def _text_field(form: FormData, name: str) -> str | None:
    values = _texts(form, name)
    if len(values) > 1:
        raise QueryError(f"Send `{name}` once.")
    return values[0].strip() if values else None


def _int_field(form: FormData, name: str, default: int) -> int:
    value = _text_field(form, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"`{name}` must be a whole number.") from None


# -- errors ------------------------------------------------------------------------------------
def _error(status: int, sentence: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers)


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if text.endswith(".") else text + "."


def _validation_sentence(errors: Any) -> str:
    if not errors:
        return "The request is malformed."
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "is not valid")).rstrip(".")
    return f"{where}: {message}." if where else f"The request is malformed: {message}."


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    limit_mb = settings.app.max_upload_mb

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:
            sentence = f"The upload is larger than the limit of {limit_mb} MB."
        elif exc.status_code == 404:
            sentence = f"There is no endpoint {request.url.path}."
        elif exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return _error(422, "The request body could not be parsed.")
        else:
            sentence = MESSAGES.get(exc.status_code) or _sentence(Exception(exc.detail))
        return _error(exc.status_code, sentence, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_sentence(exc.errors()))

    @app.exception_handler(DecodeError)
    async def not_an_image(request: Request, exc: DecodeError) -> JSONResponse:
        return _error(400, f"That file is not a usable image: {exc.reason}.")

    @app.exception_handler(UnknownImage)
    async def unknown(request: Request, exc: UnknownImage) -> JSONResponse:
        return _error(404, _sentence(exc))

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return _error(400 if isinstance(exc, FetchFailed) else 422, _sentence(exc))

    @app.exception_handler(ManualAddError)
    async def bad_add(request: Request, exc: ManualAddError) -> JSONResponse:
        return _error(422, _sentence(exc))

    @app.exception_handler(RunInProgress)
    async def busy(request: Request, exc: RunInProgress) -> JSONResponse:
        return _error(409, _sentence(exc).capitalize())

    @app.exception_handler(TextSearchUnavailable)
    async def no_text(request: Request, exc: TextSearchUnavailable) -> JSONResponse:
        return _error(503, _sentence(exc))

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(503, _sentence(exc))

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, unavailable)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "Something went wrong on the server; its log has the details.")


def _install_openapi(app: FastAPI) -> None:
    """Document /search's two request bodies (JSON and multipart), which it parses itself."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = SearchBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["SearchBody"] = body
        form_fields = {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "negative_image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            **{
                name: {"type": "array", "items": {"type": "string"}}
                for name in ("url", "positive", "negative", "source", "category")
            },
            **{
                name: {"type": "string"} for name in ("text", "since", "until", "words", "strategy")
            },
            "top_k": {"type": "integer"},
            "offset": {"type": "integer"},
            "threshold": {"type": "number"},
        }
        schema["paths"]["/search"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": form_fields}},
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchBody"}},
            },
        }
        for path, kind in (("/check", "check"), ("/images", "add")):
            fields: dict[str, Any] = {"image": {"type": "string", "format": "binary"}}
            if kind == "add":
                fields.update(
                    {
                        name: {"type": "string"}
                        for name in ("title", "description", "source_uri", "published_at")
                    }
                )
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": fields, "required": ["image"]}
                    }
                },
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- the server: UI and API in one process -----------------------------------------------------
def build_server(settings: Settings) -> st.App:
    """Streamlit's ASGI app for the page, with the API mounted at /api and a clean shutdown."""
    import streamlit as st
    from starlette.routing import Mount

    warmup = Warmup()

    @asynccontextmanager
    async def lifespan(_app: st.App) -> AsyncIterator[None]:
        warmup.start(shared_runtime(settings))
        try:
            yield None
        finally:
            warmup.stopping.set()
            await asyncio.to_thread(_shut_down, warmup)

    api = create_api(settings, warmup=warmup)
    ui = Path(__file__).with_name("ui.py")
    return st.App(ui, routes=[Mount(PREFIX, app=api)], lifespan=lifespan)


def _shut_down(warmup: Warmup) -> None:
    """Let a model load in flight finish, stop the in-app schedule (a running job ends after
    its batch), then close the index."""
    from app.worker import shutdown_in_app

    warmup.wait(WARMUP_WAIT_S)
    shutdown_in_app()  # before the interpreter-exit hook, which would come too late
    close_shared_runtimes()
    log.info("stopped")


def serve(settings: Settings, flags: dict[str, Any]) -> None:
    """Run the page and the API on one port until SIGTERM/SIGINT (`imgsearch serve`)."""
    # serve_flags uses Streamlit's flag names (server_port); App.run takes dotted names.
    options = {name.replace("_", ".", 1): value for name, value in flags.items()}
    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler found
    # here: make that a normal exit, so supervisord sees a stop on request (exit status 0).
    signal.signal(signal.SIGTERM, _stopped)
    try:
        build_server(settings).run(config=options)
    except SystemExit as stop:
        leave(stop.code if isinstance(stop.code, int) else 1)
    except KeyboardInterrupt:  # SIGINT: uvicorn has shut down, then raised it again
        print("Interrupted.", file=sys.stderr)
        leave(130)
    leave(0)


def leave(code: int) -> NoReturn:
    """Exit once the server's own shutdown is done, without the interpreter's teardown.

    A page's search runs on a Streamlit script thread, which is a daemon: when the interpreter
    tears down while one is still inside the model (torch or ONNX Runtime), the native runtime
    aborts the process (SIGABRT, measured), and supervisord records a crash instead of a stop.
    By now the schedule is stopped and the index closed, so nothing is left to lose: flush the
    logs and the standard streams, and exit with the status the stop deserves.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
