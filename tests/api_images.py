"""Image files for the schema-driven API fuzzer: its upload fields declare image media types.

Loaded by schemathesis through schemathesis.toml (`hooks`): for each media type the API's
multipart `image` fields declare, a strategy that draws a real file of that format (random
size, colour and noise), so schema-valid requests carry images and schema-invalid ones the
fuzzer's own random bytes.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


def image_files(pil_format: str) -> st.SearchStrategy[bytes]:
    """Files of one format: 1 to 96 pixels a side, a flat colour or seeded noise."""

    def encode(size: tuple[int, int], seed: int, noisy: bool) -> bytes:
        rng = np.random.default_rng(seed)
        shape = (size[1], size[0], 3)
        pixels = rng.integers(0, 256, shape) if noisy else np.full(shape, seed % 256)
        out = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(out, pil_format)
        return out.getvalue()

    sizes = st.tuples(st.integers(1, 96), st.integers(1, 96))
    return st.builds(encode, sizes, st.integers(0, 2**32 - 1), st.booleans())


for media_type, pil_format in FORMATS.items():
    schemathesis.openapi.media_type(media_type, image_files(pil_format))
