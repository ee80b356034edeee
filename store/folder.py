"""The embedded index folder: who holds it (for IndexLocked), its lock, atomic JSON records."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from store.index import IndexLocked


def claim_folder(folder: Path) -> Callable[[], None]:
    """Record this process as the folder's holder (for IndexLocked); returns the release."""
    owner_file = owner_path(folder)
    owner_file.write_text(json.dumps({"pid": os.getpid(), "command": _command_line()}))

    def release() -> None:
        owner_file.unlink(missing_ok=True)

    return release


def owner_path(folder: Path) -> Path:
    """The file beside the folder naming the process that holds it."""
    return folder.with_name(folder.name + ".owner")


def locked_sentence(folder: Path) -> str:
    """One sentence: who holds the folder and what to do."""
    holder = "another imgsearch process"
    try:
        owner = json.loads(owner_path(folder).read_text())
        holder = f"process {owner['pid']} ({owner['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (
        f"The embedded index at {folder} is held by {holder}; only one process can open it, so "
        "stop that process (e.g. the app) first, or run a Qdrant server and set "
        "IMGSEARCH_QDRANT__URL."
    )


def take_lock(path: Path, folder: Path) -> IO[bytes]:
    """Hold an exclusive flock on path while the returned file is open; IndexLocked if held."""
    handle = path.open("a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IndexLocked(locked_sentence(folder)) from None
    return handle


def write_json_atomically(path: Path, value: Any) -> None:
    """Write JSON so a reader (or a crash) sees the old file or the new one, never half."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _command_line() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:200]
