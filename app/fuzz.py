"""`imgsearch fuzz-decode`: decode mutated images; anything but a DecodeError is a bug."""

from __future__ import annotations

import argparse
import io
import json
import random
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from config import Settings
from embed.decode import DecodeError, decode_image, decode_preview, sha256_of

PREVIEW_SIDE = 64
KEEP_PER_TYPE = 5  # reproducers written per escaped exception type; one is enough to debug
ORIENTATION = 0x0112


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _picture(mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> Image.Image:
    """A small image with structure (gradient + block), so codecs have something to encode."""
    rgb = Image.linear_gradient("L").resize(size).convert("RGB")
    rgb.paste((200, 30, 60), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    if mode == "I;16":
        return Image.linear_gradient("L").resize(size).point(lambda v: v * 257, "I").convert("I;16")
    return rgb.convert(mode)


def _exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "imgsearch fuzz"  # Make: gives the IFD a string entry with an offset
    return exif


def seed_images() -> list[tuple[str, bytes]]:
    """Valid images of every accepted format and the modes and metadata that matter."""
    frames = [_picture(), _picture().rotate(90)]
    palette = _picture().convert("P")
    return [
        ("jpeg", _encode(_picture(), "JPEG")),
        ("jpeg-exif-orientation", _encode(_picture(), "JPEG", exif=_exif().tobytes())),
        ("jpeg-progressive", _encode(_picture(), "JPEG", progressive=True)),
        ("png", _encode(_picture(), "PNG")),
        ("png-rgba", _encode(_picture("RGBA"), "PNG")),
        ("png-exif", _encode(_picture(), "PNG", exif=_exif(3).tobytes())),
        ("png-16bit", _encode(_picture("I;16"), "PNG")),
        ("png-palette", _encode(palette, "PNG", transparency=0)),
        ("webp", _encode(_picture(), "WEBP")),
        ("webp-lossless-rgba", _encode(_picture("RGBA"), "WEBP", lossless=True)),
        ("webp-exif", _encode(_picture(), "WEBP", exif=_exif(8).tobytes())),
        ("gif", _encode(palette, "GIF")),
        ("gif-animated", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("bmp", _encode(_picture(), "BMP")),
        ("tiff", _encode(_picture(), "TIFF")),
        ("tiff-deflate-exif", _encode(_picture(), "TIFF", compression="tiff_adobe_deflate")),
        ("tiff-float", _encode(_picture("F"), "TIFF")),
    ]


# Mutations: each takes the target, every seed (for splicing) and the random generator.
Mutation = Callable[[bytes, list[bytes], random.Random], bytes]


def flip_bits(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """Flip 1 to 8 random bits."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def overwrite_bytes(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """Set a few bytes to boundary values (0, 0x7F, 0x80, 0xFF): sizes, counts and offsets."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF))
    return bytes(out)


def truncate(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """Cut the file short, as an interrupted download does."""
    return data[: rng.randrange(1, len(data))]


def delete_chunk(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """Remove a run of bytes from the middle."""
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, max(1, len(data) // 4)) :]


def splice(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """The head of this file followed by the tail of another one."""
    other = rng.choice(seeds)
    return data[: rng.randrange(1, len(data))] + other[rng.randrange(len(other)) :]


def broken_exif(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """A valid image whose EXIF block is damaged or random (the pixels themselves are fine)."""
    raw = bytearray(_exif(rng.randint(0, 9)).tobytes())
    if rng.random() < 0.3:
        raw = bytearray(raw[:8] + rng.randbytes(rng.randint(0, 64)))  # keep the TIFF header
    else:
        for _ in range(rng.randint(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    fmt = rng.choice(("JPEG", "PNG", "WEBP"))
    return _encode(_picture(), fmt, exif=bytes(raw))


MUTATIONS: tuple[Mutation, ...] = (
    flip_bits,
    overwrite_bytes,
    truncate,
    delete_chunk,
    splice,
    broken_exif,
)


def mutants(count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` deterministic mutants of the seed images, each named by seed image and mutation."""
    rng = random.Random(seed)
    seeds = seed_images()
    seed_bytes = [data for _, data in seeds]
    out = []
    for _ in range(count):
        name, data = rng.choice(seeds)
        mutation = rng.choice(MUTATIONS)
        out.append((f"{name}/{mutation.__name__}", mutation(data, seed_bytes, rng)))
    return out


@dataclass(frozen=True)
class Outcome:
    """What one decoder call did with one mutant: `ok`, `refused` or `escaped` (a bug)."""

    kind: str
    detail: str = ""  # the DecodeError reason, or the escaped exception's type name
    trace: str = ""


def outcomes(data: bytes) -> dict[str, Outcome]:
    """Run both decoder entry points on the bytes and classify what each did."""
    calls: dict[str, Callable[[], Image.Image]] = {
        "decode_image": lambda: decode_image(data).image,
        "decode_preview": lambda: decode_preview(data, PREVIEW_SIDE),
    }
    result = {}
    for name, call in calls.items():
        try:
            image = call()
        except DecodeError as exc:
            result[name] = Outcome("refused", exc.reason)
        except Exception as exc:  # the point of fuzzing: record whatever escapes
            result[name] = Outcome("escaped", type(exc).__name__, traceback.format_exc())
        else:
            if image.mode == "RGB":
                result[name] = Outcome("ok")
            else:
                result[name] = Outcome("escaped", f"mode {image.mode}")
    return result


def fuzz(iterations: int, seed: int, *, out_dir: Path = Path("fuzz-decode")) -> dict[str, object]:
    """Decode `iterations` mutants; count outcomes and write reproducers of escapes to out_dir."""
    counts: Counter[str] = Counter()
    escaped: Counter[str] = Counter()
    reproducers: list[str] = []
    for name, data in mutants(iterations, seed):
        for call, outcome in outcomes(data).items():
            counts[outcome.kind] += 1
            if outcome.kind != "escaped":
                continue
            escaped[outcome.detail] += 1
            if escaped[outcome.detail] <= KEEP_PER_TYPE:
                out_dir.mkdir(parents=True, exist_ok=True)
                stem = f"{outcome.detail.replace(' ', '_')}-{sha256_of(data)[:12]}"
                (out_dir / f"{stem}.bin").write_bytes(data)
                (out_dir / f"{stem}.txt").write_text(f"{name} via {call}\n\n{outcome.trace}")
                reproducers.append(str(out_dir / f"{stem}.bin"))
    return {
        "iterations": iterations,
        "seed": seed,
        "outcomes": dict(counts),
        "escaped": dict(escaped),
        "reproducers": reproducers,
    }


def cmd_fuzz_decode(args: argparse.Namespace, settings: Settings) -> int:
    """Print the fuzz summary as JSON; exit 1 when any exception escaped the decoder."""
    out_dir = Path(args.out) if args.out else settings.data_dir / "fuzz-decode"
    summary = fuzz(args.iterations, args.seed, out_dir=out_dir)
    print(json.dumps(summary, indent=2))
    return 1 if summary["escaped"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `fuzz-decode` subcommand."""
    p = sub.add_parser(
        "fuzz-decode", help="decode mutated images; report anything but a clean refusal"
    )
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="reproducer folder (default DATA_DIR/fuzz-decode)")
    p.set_defaults(handler=cmd_fuzz_decode)
