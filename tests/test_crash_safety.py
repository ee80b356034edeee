"""A run killed with SIGKILL at any moment, then run again: every image once, no orphans."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from pathlib import Path

import pytest

from store.images import LocalImageStore
from store.keys import point_id
from tests.conftest import make_settings, open_catalog
from tests.subprocesses import (
    IMGSEARCH,
    child_env,
    state_count,
    state_query,
    wait_for,
    write_images,
)

IMAGES = 120


def kill_moment(data: Path, moment: str) -> bool:
    """True once the child run has reached `moment` (read from the state database, read-only)."""
    if moment == "objects written, nothing upserted":
        return state_count(data, "pending") > 0 and state_count(data, "seen") == 0
    if moment == "a few batches in":
        return state_count(data, "seen") >= 12
    if moment == "half way":
        return state_count(data, "seen") >= IMAGES // 2
    raise ValueError(moment)


@pytest.mark.parametrize(
    "moment", ["objects written, nothing upserted", "a few batches in", "half way"]
)
def test_a_run_killed_midway_and_run_again_indexes_every_image_exactly_once(
    tmp_path: Path, moment: str
) -> None:
    folder, data = tmp_path / "photos", tmp_path / "data"
    paths = write_images(folder, IMAGES)
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(hashes) == IMAGES
    env = child_env(data, folder)

    child = subprocess.Popen(
        [IMGSEARCH, "worker", "--once"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: kill_moment(data, moment), timeout=180, what=moment, every=0.02)
        assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert state_count(data, "seen") < IMAGES

    rerun = subprocess.run(
        [IMGSEARCH, "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr

    index = open_catalog(data / "qdrant", make_settings(data))
    try:
        points = list(index.scroll())
    finally:
        index.close()
    shas = [p.payload["sha256"] for p in points]
    assert len(points) == IMAGES
    assert len(set(shas)) == len(shas), "duplicate points for one image"
    assert set(shas) == hashes, "the catalog is not exactly the folder's images"
    assert all(p.id == point_id(p.payload["sha256"]) for p in points)

    store = LocalImageStore(data / "images")
    stored = set(store.keys("originals/")) | set(store.keys("thumbnails/"))
    referenced = {p.payload["image_key"] for p in points} | {
        p.payload["thumbnail_key"] for p in points
    }
    assert stored - referenced == set(), "objects without a point (orphans)"
    assert referenced - stored == set(), "points whose objects are missing"
    assert state_count(data, "seen") == IMAGES
    assert state_count(data, "pending") == 0
    # The killed run is not left "running" forever: the next run marked it interrupted.
    statuses = [row[0] for row in state_query(data, "SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "ok"]
