"""Stage store: Decoded -> Stored (original + thumbnail written, descriptors prepared)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from ingest.items import Decoded, Failed, Stored
from ingest.state import StateStore
from store.images import ImageStore, StoreError, make_thumbnail
from store.keys import original_key, point_id, thumbnail_key


def write_originals(
    decoded: Decoded,
    images: ImageStore,
    state: StateStore,
    prepare: Callable[[Image.Image], Mapping[str, Any]],
    thumbnail_px: int,
) -> Stored | Failed:
    """Write the original and its thumbnail under content addresses, noted as pending first."""
    image = decoded.image
    pid = point_id(image.sha256)
    okey = original_key(image.sha256, image.extension)
    tkey = thumbnail_key(image.sha256)
    # Pending first: if the process dies before the upsert, the next run finds these objects
    # and either keeps them (point exists) or removes them (no orphans).
    state.add_pending(image.sha256, pid, [okey, tkey])
    try:
        images.put(okey, decoded.data, image.content_type)
        images.put(tkey, make_thumbnail(image.image, thumbnail_px), "image/jpeg")
    except StoreError as exc:
        return Failed(decoded.item, "store", str(exc))
    return Stored(
        decoded.item, image, pid, okey, tkey, prepare(image.image), metadata=decoded.metadata
    )
