"""Fuzzing the decoder: mutants of every accepted format decode to RGB or raise DecodeError."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from app import fuzz
from embed.decode import decode_image, decode_preview

SEED = 20240601
MUTANTS = 2000  # < 1 s; 300 mutants hit none of the old escapes, 2000 hit six

# Pillow warns on every damaged EXIF/TIFF tag; the outcome, not the warning, is under test.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_every_seed_image_is_a_valid_image_of_an_accepted_format() -> None:
    formats = set()
    for name, data in fuzz.seed_images():
        decoded = decode_image(data)
        assert decoded.image.mode == "RGB", name
        assert decode_preview(data, 16).mode == "RGB", name
        formats.add(decoded.format)
    assert formats == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}


def test_mutated_images_either_decode_to_rgb_or_raise_decode_error() -> None:
    kinds: dict[str, int] = {}
    for name, data in fuzz.mutants(MUTANTS, SEED):
        for call, outcome in fuzz.outcomes(data).items():
            assert outcome.kind != "escaped", f"{name} via {call}: {outcome.trace}"
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    # Both outcomes occur, so the mutants are neither all harmless nor all hopeless.
    assert kinds["ok"] > 0 and kinds["refused"] > 0


def test_every_mutation_is_exercised_and_the_mutants_are_deterministic() -> None:
    first = fuzz.mutants(MUTANTS, SEED)
    assert first == fuzz.mutants(MUTANTS, SEED)
    used = {name.split("/")[1] for name, _ in first}
    assert used == {mutation.__name__ for mutation in fuzz.MUTATIONS}


def test_each_mutation_changes_the_bytes() -> None:
    seeds = [data for _, data in fuzz.seed_images()]
    rng = random.Random(SEED)
    for mutation in fuzz.MUTATIONS:
        assert any(mutation(seeds[0], seeds, rng) != seeds[0] for _ in range(5)), mutation


def test_fuzz_command_counts_outcomes_and_writes_no_reproducer_when_nothing_escapes(
    tmp_path: Path,
) -> None:
    summary = fuzz.fuzz(40, SEED, out_dir=tmp_path / "crashes")
    outcomes = summary["outcomes"]
    assert isinstance(outcomes, dict)
    assert sum(outcomes.values()) == 80  # two decoder entry points per mutant
    assert summary["escaped"] == {} and summary["reproducers"] == []
    assert not (tmp_path / "crashes").exists()


def test_fuzz_command_writes_a_reproducer_for_an_escaped_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_decoder(data: bytes, side: int) -> Image.Image:
        raise KeyError("simulated decoder bug")

    monkeypatch.setattr(fuzz, "decode_preview", broken_decoder)
    summary = fuzz.fuzz(10, SEED, out_dir=tmp_path)
    assert summary["escaped"] == {"KeyError": 10}
    reproducers = summary["reproducers"]
    assert isinstance(reproducers, list) and len(reproducers) == fuzz.KEEP_PER_TYPE
    first = Path(reproducers[0])
    assert first.read_bytes()  # the mutant itself, to replay
    assert "simulated decoder bug" in first.with_suffix(".txt").read_text()
