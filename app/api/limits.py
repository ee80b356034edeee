"""The upload limit: 413 as JSON before an oversized body is read, or as soon as it passes."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_SLACK = 64 * 1024  # form boundaries and fields around a file of the maximum size


def too_large_sentence(limit_mb: int) -> str:
    """The one sentence of a 413."""
    return f"The upload is larger than the limit of {limit_mb} MB."


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
            await JSONResponse({"error": self.sentence}, 413)(scope, receive, send)
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
            await JSONResponse({"error": self.sentence}, 413)(scope, receive, send)
