"""Qdrant Edge's background HNSW build: a child process indexes a copy of the shard.

`optimize()` holds Python's GIL for its whole run (minutes at 100k points), so it runs in a child
process on a copy of the shard while the parent's queries search the live shard exactly. The
parent records the ids it writes meanwhile; `Build.catch_up` applies them to the indexed copy,
which store/edge.py then swaps in. The child is

    python -m store.edge_build <copy of the shard> <parent pid>
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import qdrant_edge as qe

from store.keys import parse_point_id

ROOT = Path(__file__).resolve().parent.parent
CATCH_UP_PAGE = 256


class Build:
    """One background HNSW build: its thread, its child process and the ids written meanwhile."""

    def __init__(self) -> None:
        self.changed: set[str] = set()
        self.schema_changed = False
        self.child: subprocess.Popen[bytes] | None = None
        self.thread: threading.Thread | None = None

    def run(self, copy: Path) -> tuple[int, str]:
        """Index the copy in a child process; its exit status and the last line it wrote."""
        self.child = subprocess.Popen(
            [sys.executable, "-m", "store.edge_build", str(copy), str(os.getpid())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
        )
        _, err = self.child.communicate()
        lines = err.decode(errors="replace").strip().splitlines()
        return self.child.returncode, lines[-1] if lines else "no output"

    def stop(self) -> None:
        """Kill the child if it is still indexing (its copy is thrown away)."""
        if self.child is not None and self.child.poll() is None:
            self.child.kill()

    def catch_up(self, copy: Path, live: qe.EdgeShard) -> None:
        """Bring the indexed copy up to date with the live shard: the points written since."""
        fresh = qe.EdgeShard.load(str(copy))
        try:
            changed = sorted(self.changed)
            for start in range(0, len(changed), CATCH_UP_PAGE):
                ids = changed[start : start + CATCH_UP_PAGE]
                found = live.retrieve([parse_point_id(i) for i in ids], True, True)
                current = {str(r.id): r for r in found}
                gone = [i for i in ids if i not in current]
                if current:
                    fresh.update(
                        qe.UpdateOperation.upsert_points(
                            [
                                qe.Point(r.id, r.vector or {}, r.payload or {})
                                for r in current.values()
                            ]
                        )
                    )
                if gone:
                    fresh.update(
                        qe.UpdateOperation.delete_points([parse_point_id(i) for i in gone])
                    )
            fresh.flush()
        finally:
            fresh.close()


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when the process that started it dies (kill -9 too)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def optimize(path: str, parent: int) -> None:
    """The child process of a background build: index the copy, then close it cleanly."""
    _die_with_parent()
    if os.getppid() != parent:
        return  # the parent is already gone; its copy is stale
    shard = qe.EdgeShard.load(path)
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        optimize(sys.argv[1], int(sys.argv[2]))
