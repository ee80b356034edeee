"""Content-addressed identities: point ids and object keys derived from an image's SHA-256."""

from __future__ import annotations

import uuid

# A fixed namespace, so one image maps to one point id on every machine, forever.
NAMESPACE = uuid.UUID("5b0d3f5e-6f4a-4c59-9a67-3f1f8f5b2a10")


def point_id(sha256: str) -> str:
    """UUID5 of the image's SHA-256: the same image is always the same point."""
    return str(uuid.uuid5(NAMESPACE, sha256))


def parse_point_id(pid: str) -> uuid.UUID | int | str:
    """A point id as Qdrant Edge takes it: a UUID, an unsigned integer, else the string."""
    try:
        return uuid.UUID(pid)
    except ValueError:
        return int(pid) if pid.isdigit() else pid


def original_key(sha256: str, extension: str) -> str:
    """Object key of the original bytes."""
    return f"originals/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def thumbnail_key(sha256: str) -> str:
    """Object key of the result-grid thumbnail."""
    return f"thumbnails/{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"
