"""Memory bounded by design: huge images decode small, one at a time, or are reported.

The hostile files (small on disk, huge in pixels) are made by `write_hostile`; run
`python -m tests.test_memory DIR [--pixels N]` to write them for a measurement with
`/usr/bin/time -v imgsearch ingest DIR` (README, "Memory").
"""

from __future__ import annotations

import argparse
import io
import math
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from config import Settings
from embed.decode import DEFAULT_MAX_PIXELS, DecodeError, Fit, decode_image, decode_preview
from embed.descriptors import build_descriptors as build
from embed.encoder import Encoder
from embed.pdq import hamming, pdq_hash
from ingest.decode import Decoder, decode_concurrency, ingest_fit
from ingest.items import Decoded, Failed, Fetched, ItemMeta, SourceItem
from ingest.state import StateStore
from tests.conftest import image_bytes, make_settings, open_catalog, photo

# -- the hostile files ---------------------------------------------------------------------------

# Name, kind, width, height of each hostile file (each under 1.4 MB on disk).
# The issue names one JPEG; a progressive one is added, as libjpeg holds all its coefficients.
HOSTILE = [
    ("grey16.png", "png16-grey", 9459, 9459),
    ("rgba16.png", "png16-rgba", 9459, 9459),
    ("wide.jpg", "jpeg", 12000, 7400),
    ("progressive.jpg", "jpeg-progressive", 12000, 7400),
    ("wide.webp", "webp", 16000, 5500),
    ("lzw.tif", "tiff-lzw", 9459, 9459),
    ("deflate.tif", "tiff-deflate", 9459, 9459),
    ("square.gif", "gif", 9400, 9400),
]


def _gradient_row(width: int, channels: int, top: int) -> np.ndarray:
    """One row of smooth ramps (one per channel), 0..top: every row of the image is this one."""
    ramp = np.linspace(0, top, width)
    return np.stack([np.roll(ramp, k * width // 4) for k in range(channels)], axis=-1)


def _png16(path: Path, width: int, height: int, channels: int) -> None:
    """A 16-bit PNG (grey or RGBA) written row by row: the generator never holds the image."""
    row = _gradient_row(width, channels, 65535).astype(">u2").tobytes()
    colour_type = {1: 0, 4: 6}[channels]
    compressor = zlib.compressobj(9)
    body = bytearray()
    first = b"\x00" + row  # filter None for the first row, then Up: every later row is zeros
    later = b"\x02" + bytes(len(row))
    body += compressor.compress(first)
    for _ in range(height - 1):
        body += compressor.compress(later)
    body += compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", bytes(body))
        + chunk(b"IEND", b"")
    )


def _flat_bands(mode: str, width: int, height: int) -> Image.Image:
    """Eight horizontal bands of flat colour: what LZW and GIF compress best."""
    image = Image.new(mode, (width, height))
    band = math.ceil(height / 8)
    for k in range(8):
        colour = (k * 32, 255 - k * 32, (k * 97) % 256) if mode == "RGB" else k * 30
        image.paste(colour, (0, k * band, width, min(height, (k + 1) * band)))
    return image


def _smooth_rgb(width: int, height: int) -> Image.Image:
    row = _gradient_row(width, 3, 255).astype(np.uint8)
    return Image.fromarray(np.broadcast_to(row, (height, width, 3)).copy())


def write_hostile(directory: Path, *, pixels: int | None = None) -> list[Path]:
    """Write the eight hostile files into `directory` (optionally scaled so each has
    about `pixels` pixels, aspect kept); returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, kind, width, height in HOSTILE:
        if pixels is not None:
            scale = math.sqrt(pixels / (width * height))
            width, height = int(width * scale), int(height * scale)
        path = directory / name
        if kind == "png16-grey":
            _png16(path, width, height, 1)
        elif kind == "png16-rgba":
            _png16(path, width, height, 4)
        elif kind.startswith("jpeg"):
            progressive = kind.endswith("progressive")
            _smooth_rgb(width, height).save(path, "JPEG", quality=80, progressive=progressive)
        elif kind == "webp":
            _smooth_rgb(width, height).save(path, "WEBP", quality=50, method=0)
        elif kind.startswith("tiff"):
            compression = "tiff_lzw" if kind == "tiff-lzw" else "tiff_adobe_deflate"
            _flat_bands("RGB", width, height).save(path, "TIFF", compression=compression)
        else:
            _flat_bands("P", width, height).save(path, "GIF")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.test_memory DIR [--pixels N]`: write the hostile files, list them."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--pixels", type=int, default=None, help="scale each to about N pixels")
    args = parser.parse_args(argv)
    for path in write_hostile(args.directory, pixels=args.pixels):
        with Image.open(path) as image:
            print(
                f"{path.name:18} {image.size[0]:>6}x{image.size[1]:<6} {path.stat().st_size:>9} B"
            )
    return 0


# -- tests ---------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def test_a_jpeg_over_the_cap_is_decoded_at_a_reduced_scale_within_it() -> None:
    # 6000x3700 with a 10 MP cap stands for the 12000x7400 JPEG with the 40 MP cap.
    data = _jpeg(_smooth_rgb(6000, 3700), quality=70)
    fit = Fit(short=288, long=512)
    decoded = decode_image(data, fit=fit, max_pixels=10_000_000)
    # libjpeg's 1/8 scale gives 750x463: both sides still what is needed, no further reduction.
    assert decoded.image.size == (750, 463)
    assert min(decoded.image.size) >= fit.short and max(decoded.image.size) >= fit.long
    assert (decoded.width, decoded.height) == (6000, 3700)  # the catalog records the original
    # At full size the same file is over the cap, refused from its header.
    with pytest.raises(DecodeError, match="decompression bomb: 6000x3700"):
        decode_image(data, max_pixels=10_000_000)


def test_a_progressive_jpeg_counts_at_full_size_against_the_cap() -> None:
    # libjpeg keeps every DCT coefficient of a progressive file whatever the output scale.
    data = _jpeg(_smooth_rgb(1200, 740), progressive=True)
    fit = Fit(short=64, long=64)
    assert decode_image(data, fit=fit, max_pixels=1200 * 740).image.size[0] < 1200
    with pytest.raises(DecodeError, match="decompression bomb: 1200x740"):
        decode_image(data, fit=fit, max_pixels=1200 * 740 - 1)


def test_a_baseline_jpeg_counts_its_pixels_at_the_decoding_scale() -> None:
    data = _jpeg(_smooth_rgb(1200, 740))
    small = decode_image(data, fit=Fit(short=64, long=64), max_pixels=150 * 93)  # 1/8 scale
    assert (small.width, small.height) == (1200, 740)
    with pytest.raises(DecodeError, match=r"1200x740 pixels \(150x93 at a reduced scale\)"):
        decode_image(data, fit=Fit(short=64, long=64), max_pixels=150 * 93 - 1)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGBA", "PNG"), ("I;16", "PNG"), ("P", "GIF"), ("L", "TIFF"), ("RGB", "WEBP")],
)
def test_other_formats_are_reduced_a_strip_at_a_time_like_a_whole_image_reduction(
    mode: str, fmt: str
) -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (1103, 1501, 3), dtype=np.uint8)  # strips of ~700 rows
    image = Image.fromarray(rgb).convert("RGBA" if mode in ("RGBA", "P") else mode)
    if mode == "RGBA":
        image.putalpha(Image.fromarray(rng.integers(0, 256, (1103, 1501), dtype=np.uint8)))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (1103, 1501), dtype=np.uint16))
    if mode == "P":
        image = Image.fromarray(rng.integers(0, 64, (1103, 1501), dtype=np.uint8), mode="P")
        image.putpalette(rng.integers(0, 256, 64 * 3, dtype=np.uint8).tobytes())
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    fit = Fit(short=100, long=100)
    decoded = decode_image(buffer.getvalue(), fit=fit).image
    expected = decode_image(buffer.getvalue()).image.reduce(fit.factor(image.size))
    assert decoded.mode == "RGB" and decoded.size == expected.size == (137, 101)
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))


def test_wide_integer_pixels_are_scaled_with_the_range_of_the_whole_image() -> None:
    values = np.zeros((2000, 1000), dtype=np.int32)
    values[:10] = -(2**20)  # the darkest pixels sit in the first strip only
    values[-10:] = 2**20  # the brightest in the last
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "TIFF")
    whole = np.asarray(decode_image(buffer.getvalue()).image)
    strips = np.asarray(decode_image(buffer.getvalue(), fit=Fit(short=500, long=1000)).image)
    assert whole[1000, 0, 0] == strips[500, 0, 0] == 128  # zero is mid-grey in both
    assert strips[0, 0, 0] == 0 and strips[-1, 0, 0] == 255


def test_a_fitted_decode_keeps_the_exif_orientation_and_original_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _jpeg(_smooth_rgb(4000, 1000), exif=exif.tobytes())
    decoded = decode_image(data, fit=Fit(short=100, long=200))
    assert (decoded.width, decoded.height) == (1000, 4000)
    assert decoded.image.width < decoded.image.height


def test_the_previews_of_huge_images_stay_within_their_side() -> None:
    image = _smooth_rgb(3000, 2000)
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        assert decode_preview(buffer.getvalue(), 256).size == (256, 171)


def test_descriptors_of_a_fitted_decode_match_the_full_size_decode() -> None:
    # A copy found at ingestion must still match a query decoded at full size: PDQ (Meta's
    # match threshold is 31 bits) should barely move.
    big = photo("astronaut").resize((2048, 2048), Image.Resampling.LANCZOS)
    for data in (_jpeg(big, quality=92), _png(big)):
        full = decode_image(data).image
        fitted = decode_image(data, fit=Fit(short=288, long=512)).image
        assert max(fitted.size) < max(full.size)
        assert hamming(pdq_hash(full).bits, pdq_hash(fitted).bits) <= 8


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_ingestion_needs_what_every_consumer_reads(settings: Settings) -> None:
    fit = ingest_fit(settings)
    assert fit.short >= 288  # SSCD's short side (and ResNet's 256 resize)
    assert fit.long >= max(512, settings.storage.thumbnail_px)  # PDQ hashes at 512


def test_the_decode_bound_follows_the_setting_and_the_cores(tmp_path: Path) -> None:
    assert decode_concurrency(make_settings(tmp_path, decode={"concurrency": 3})) == 3
    assert 1 <= decode_concurrency(make_settings(tmp_path)) <= 4


def _item(key: str, data: bytes) -> Fetched:
    item = SourceItem("test", key, "v1", ItemMeta(source_uri=f"file:///{key}"), lambda: data)
    return Fetched(item, data)


def test_no_more_images_are_decoded_at_once_than_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import embed.decode
    import ingest.decode

    active, peak, changed = 0, 0, threading.Condition()
    real: Callable[..., object] = embed.decode.decode_image

    def counting(data: bytes, **kwargs: object) -> object:
        nonlocal active, peak
        with changed:
            active += 1
            peak = max(peak, active)
            changed.notify_all()
            # Hold the slot a while (or until the bound is seen broken) so others pile up.
            changed.wait_for(lambda: active > 2, timeout=0.1)
        try:
            return real(data, **kwargs)
        finally:
            with changed:
                active -= 1

    monkeypatch.setattr(ingest.decode, "decode_image", counting)
    decoder = Decoder(fit=Fit(short=16, long=16), max_pixels=DEFAULT_MAX_PIXELS, concurrency=2)
    data = _jpeg(_smooth_rgb(64, 48))
    results: list[Decoded | Failed] = []
    threads = [
        threading.Thread(target=lambda k=k: results.append(decoder(_item(str(k), data))))
        for k in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
    assert len(results) == 8 and all(isinstance(r, Decoded) for r in results)


def test_a_huge_file_is_reported_with_its_reason_not_raised() -> None:
    # 2400x2400 with a 4 MP cap stands for the 9400x9400 GIF with the 40 MP cap.
    decoder = Decoder(fit=Fit(short=288, long=512), max_pixels=4_000_000, concurrency=1)
    buffer = io.BytesIO()
    _flat_bands("P", 2400, 2400).save(buffer, "GIF")
    result = decoder(_item("square.gif", buffer.getvalue()))
    assert isinstance(result, Failed) and result.stage == "decode" and not result.retryable
    assert result.reason.startswith("decompression bomb: 2400x2400 pixels")


def test_the_hostile_files_are_small_on_disk_and_huge_in_pixels(tmp_path: Path) -> None:
    paths = write_hostile(tmp_path, pixels=200_000)  # the same kinds, scaled down for speed
    assert len(paths) == 8
    decoder = Decoder(fit=Fit(short=288, long=512), max_pixels=DEFAULT_MAX_PIXELS, concurrency=1)
    for path in paths:
        result = decoder(_item(path.name, path.read_bytes()))
        assert isinstance(result, Decoded), (path.name, result)
        assert result.image.image.mode == "RGB"


def test_the_catalog_is_asked_once_per_batch_not_once_per_image(
    settings: Settings, encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest.pipeline import Pipeline
    from ingest.sources.folder import FolderSource
    from store.images import LocalImageStore

    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(16):
        (folder / f"{seed}.jpg").write_bytes(image_bytes(seed))
    (folder / "again.jpg").write_bytes(image_bytes(3))  # a duplicate still lands once
    index = open_catalog(":memory:", settings)
    calls: list[int] = []
    real = index.existing

    def counted(ids: Sequence[str]) -> set[str]:
        calls.append(len(ids))
        return real(ids)

    monkeypatch.setattr(index, "existing", counted)
    state = StateStore(tmp_path / "state.sqlite")
    pipeline = Pipeline(
        settings, index, LocalImageStore(tmp_path / "images"), build(settings, encoder), state
    )
    total = pipeline.run([FolderSource("photos", folder)]).total()
    assert (total.new, total.duplicate) == (16, 1)
    batches = -(-17 // settings.embed.batch_size)
    # Before storing (which images are new?) and before upserting (did a racing batch land
    # them?): two questions per batch, each about a whole batch.
    assert len(calls) <= 2 * batches + 1, calls
    assert sum(calls) >= 17


def test_the_state_database_runs_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.sqlite")
    try:
        assert state.pragma("journal_mode") == "wal"
        assert state.pragma("synchronous") == 1  # NORMAL
    finally:
        state.close()


if __name__ == "__main__":
    raise SystemExit(main())
