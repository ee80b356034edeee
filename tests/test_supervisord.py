"""The project's supervisord.conf: app and worker come up RUNNING and stop cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.subprocesses import BIN, child_env, wait_for

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "supervisord.conf"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private folder for the socket (a unix socket path must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="imgsearch-sv-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_config_needs_no_environment_variable_beyond_path() -> None:
    text = CONF.read_text()
    assert set(re.findall(r"%\(ENV_(\w+)\)s", text)) <= {"PATH"}
    for section in (
        "supervisord",
        "unix_http_server",
        "supervisorctl",
        "rpcinterface:supervisor",
        "program:app",
        "program:worker",
        "include",
    ):
        assert f"[{section}]" in text


def test_supervisord_runs_app_and_worker_and_shuts_down_cleanly(
    tmp_path: Path, run_dir: Path
) -> None:
    # The shipped config, with only the socket and pid file moved to this test's own folder.
    text = CONF.read_text()
    for default, private in (
        ("/tmp/imgsearch-supervisor.sock", run_dir / "supervisor.sock"),
        ("/tmp/imgsearch-supervisord.pid", run_dir / "supervisord.pid"),
    ):
        assert default in text
        text = text.replace(default, str(private))
    conf = tmp_path / "supervisord.conf"  # %(here)s: the programs run here, with no .env
    conf.write_text(text)
    port = free_port()
    env = child_env(tmp_path / "data", APP__PORT=str(port))

    daemon = subprocess.Popen(
        [BIN / "supervisord", "-c", conf],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    drain = threading.Thread(target=lambda: output.extend(daemon.stdout or []), daemon=True)
    drain.start()

    def ctl(*args: str) -> str:
        result = subprocess.run(
            [BIN / "supervisorctl", "-c", conf, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout

    try:
        status = wait_for(
            lambda: (
                (s := ctl("status"))
                and re.search(r"^app\s+RUNNING", s, re.M)
                and re.search(r"^worker\s+RUNNING", s, re.M)
                and s
            ),
            timeout=120,
            what="app and worker RUNNING",
            every=0.5,
        )
        assert "FATAL" not in status and "BACKOFF" not in status
        health = wait_for(
            lambda: _get(f"http://127.0.0.1:{port}/_stcore/health"),
            timeout=120,
            what="the app's health endpoint",
            every=0.5,
        )
        assert health == "ok"
        assert "Shut down" in ctl("shutdown")
        assert daemon.wait(timeout=90) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        drain.join(10)
    log = "".join(output)
    assert "runs inside the app's process" in log  # embedded index: the worker idles
    assert "stopped: worker (exit status 0)" in log
    assert "stopped: app (exit status 0)" in log


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
