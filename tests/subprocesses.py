"""Helpers for tests that run imgsearch in child processes: environment, polling, state reads."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import OFFLINE_URL, image_bytes

BIN = Path(sys.executable).parent
IMGSEARCH = str(BIN / "imgsearch")
T = TypeVar("T")


def write_images(folder: Path, count: int, first_seed: int = 0) -> list[Path]:
    """`count` distinct small JPEGs in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(first_seed, first_seed + count):
        path = folder / f"img-{seed:04d}.jpg"
        path.write_bytes(image_bytes(seed))
        paths.append(path)
    return paths


def child_env(data_dir: Path, folder: Path | None = None, **settings: str) -> dict[str, str]:
    """The environment of a child imgsearch: test settings only, nothing from the outer shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "IMGSEARCH_DATA_DIR": str(data_dir),
            "IMGSEARCH_EMBED__WEIGHTS": "random",
            # model files are fetched from nowhere: a test never reaches the internet
            "IMGSEARCH_VERDICT__SSCD_BASE_URL": OFFLINE_URL,
            "IMGSEARCH_TEXT__BASE_URL": OFFLINE_URL,
            "IMGSEARCH_EMBED__DEVICE": "cpu",
            "IMGSEARCH_EMBED__PRECISION": "fp32",  # int8 has its own tests (test_int8.py)
            "IMGSEARCH_EMBED__BATCH_SIZE": "4",
            "IMGSEARCH_WORKER__RETRY_BACKOFF_S": "0",
        }
    )
    if folder is not None:
        env["IMGSEARCH_SOURCES"] = json.dumps(
            [{"name": "photos", "kind": "folder", "location": str(folder)}]
        )
    env.update({f"IMGSEARCH_{k.upper()}": v for k, v in settings.items()})
    return env


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def state_query(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows from the state database, read-only; [] while it or its tables do not exist yet."""
    path = data_dir / "state.sqlite"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # schema not created yet, or a writer holds a lock
        return []
    finally:
        db.close()


def state_count(data_dir: Path, table: str) -> int:
    """Rows in one state table (0 while it does not exist)."""
    rows = state_query(data_dir, f"SELECT COUNT(*) FROM {table}")
    return int(rows[0][0]) if rows else 0
