"""`imgsearch serve`: the page and the HTTP API in one process on one port, stopped cleanly.

Streamlit's ASGI app serves the page and mounts the API (app/api) at /api; its lifespan warms
the shared Runtime up in the background and, on SIGTERM, waits for a load in flight, stops the
in-app schedule and closes the index before the process leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from app.api import PREFIX, create_api
from app.errors import UNAVAILABLE
from app.runtime import Runtime, close_shared_runtimes, shared_runtime
from app.worker import shutdown_in_app, start_in_app_scheduler
from config import Settings

if TYPE_CHECKING:
    import streamlit as st

log = logging.getLogger("imgsearch.api")

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
        try:
            runtime.warm_up()
            if not self.stopping.is_set():
                start_in_app_scheduler(runtime)
        except UNAVAILABLE as exc:  # /api/health and the page say why
            log.warning("not ready: %s", exc)


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

    api = create_api(settings, loading=lambda: warmup.loading)
    ui = Path(__file__).with_name("ui.py")
    mount = Mount(PREFIX, app=api)
    # Any byte may follow /api/ (an id with a newline in it gets the API's JSON 404 or 422, not
    # the page's plain-text 404): the route's pattern must match across line breaks.
    mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
    return st.App(ui, routes=[mount], lifespan=lifespan)


def _shut_down(warmup: Warmup) -> None:
    """Let a model load in flight finish, stop the in-app schedule (a running job ends after
    its batch), then close the index."""
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
