"""Banks of known pictures: entries with a note and a link, matched with the verdict's layers.

Held-out photographs only (camera, moon, clock, text, cell): the verification thresholds were
tuned on others (README, "Where the verification defaults come from").
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.errors import describe, outcome
from app.present import verdict_text
from app.runtime import Runtime
from embed.decode import sha256_of
from search import edits
from search.banks import BankError, UnknownEntry
from store.keys import point_id
from tests.conftest import make_settings, photo


def png(name: str) -> bytes:
    buffer = io.BytesIO()
    photo(name).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Banked:
    runtime: Runtime
    camera: str  # entry ids
    moon: str
    clock: str
    catalog_camera: str  # the catalog's resized copy of camera


@pytest.fixture(scope="module")
def banked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banked]:
    """A catalog holding a resized camera and the text photo; a bank of camera, moon, clock."""
    root = tmp_path_factory.mktemp("banks")
    folder = root / "catalog"
    folder.mkdir()
    resized = edits.apply("resize", photo("camera"), 0)
    (folder / "camera-resized.jpg").write_bytes(resized)
    (folder / "text.jpg").write_bytes(edits.apply("recompress", photo("text"), 0))
    settings = make_settings(root / "data", verdict={"sscd_weights": "off"})
    with Runtime(settings) as runtime:
        runtime.pipeline.run(runtime.adhoc_sources([str(folder)]))
        ids = {}
        for name in ("camera", "moon", "clock"):
            added, _ = runtime.alerts.bank(
                "debunked",
                png(name),
                note=f"{name} is staged",
                link=f"https://factcheck.example/{name}",
                added_by="desk",
                file=f"{name}.png",
            )
            ids[name] = added.entry.id
        yield Banked(
            runtime, ids["camera"], ids["moon"], ids["clock"], point_id(sha256_of(resized))
        )


def test_an_entry_keeps_its_note_link_who_and_when(banked: Banked) -> None:
    entry = banked.runtime.banks.get(banked.moon)
    assert entry is not None
    member = entry.membership("debunked")
    assert member is not None
    assert (member.note, member.link, member.added_by) == (
        "moon is staged",
        "https://factcheck.example/moon",
        "desk",
    )
    assert member.added_at.endswith("Z")
    assert entry.payload["file"] == "moon.png"
    assert ("debunked", 3) in banked.runtime.banks.names()
    listed = {e.id for e in banked.runtime.banks.entries("debunked")}
    assert listed == {banked.camera, banked.moon, banked.clock}
    # The entry's original is in the image store under its content address.
    assert banked.runtime.images.exists(str(entry.payload["image_key"]))


def test_an_edited_copy_of_a_banked_picture_names_the_bank_note_and_link(banked: Banked) -> None:
    data = edits.apply("mirror+caption", photo("clock"), 3)
    result = banked.runtime.search.search_bytes(data)
    assert [(b.bank, b.entry) for b in result.banks] == [("debunked", banked.clock)]
    assert result.verdict.kind == "none"  # the catalog never saw the clock
    check = result.as_check("clock.jpg")
    assert next(iter(check)) == "file" and list(check)[1] == "banks"
    assert check["banks"][0]["note"] == "clock is staged"
    assert check["banks"][0]["link"] == "https://factcheck.example/clock"
    assert check["banks"][0]["evidence"]["layer"] in ("pdq", "geometry")
    lines = verdict_text("clock.jpg", result)
    assert lines[0].startswith(
        "clock.jpg: Known fake: in bank debunked, clock is staged, https://factcheck.example/clock"
    )
    assert "Not in the catalog" in lines[1]


def test_other_pictures_match_no_bank(banked: Banked) -> None:
    for name in ("text", "cell"):
        result = banked.runtime.search.search_bytes(edits.apply("resize", photo(name), 1))
        assert result.banks == [], name
        assert result.as_dict()["banks"] == []


def test_banking_a_picture_the_catalog_holds_alerts_retroactively(banked: Banked) -> None:
    alerts = banked.runtime.alert_store.recent()
    assert [(a.entry, a.image, a.found) for a in alerts] == [
        (banked.camera, banked.catalog_camera, "retroactive")
    ]
    assert alerts[0].bank == "debunked" and alerts[0].note == "camera is staged"
    assert alerts[0].source_uri.endswith("camera-resized.jpg")


def test_one_picture_in_two_banks_is_one_entry_with_two_memberships(banked: Banked) -> None:
    banks = banked.runtime.banks
    added, alerts = banked.runtime.alerts.bank("embargoed", png("moon"), note="until Monday")
    assert added.entry.id == banked.moon and not added.new and alerts == []
    assert [m.bank for m in added.entry.banks] == ["debunked", "embargoed"]
    result = banked.runtime.search.search_bytes(edits.apply("resize", photo("moon"), 2))
    assert sorted(b.bank for b in result.banks) == ["debunked", "embargoed"]
    left = banks.remove("embargoed", banked.moon, catalog=banked.runtime.index)
    assert [m.bank for m in left.banks] == ["debunked"]
    assert banks.get(banked.moon) is not None
    with pytest.raises(UnknownEntry) as caught:
        banks.remove("embargoed", banked.moon)
    assert outcome(caught.value).status == 404  # type: ignore[union-attr]
    assert describe(caught.value) == f"There is no entry {banked.moon} in the bank embargoed."


def test_removing_an_entry_from_its_last_bank_removes_it(banked: Banked, tmp_path: Path) -> None:
    runtime = banked.runtime
    added, _ = runtime.alerts.bank("scratch", png("cell"), note="to remove")
    key = str(added.entry.payload["image_key"])
    assert runtime.images.exists(key)
    runtime.banks.remove("scratch", added.entry.id, catalog=runtime.index)
    assert runtime.banks.get(added.entry.id) is None
    assert not runtime.images.exists(key)  # the catalog does not hold the cell photo
    assert runtime.search.search_bytes(png("cell")).banks == []


def test_a_bad_bank_name_is_one_sentence(banked: Banked) -> None:
    with pytest.raises(BankError) as caught:
        banked.runtime.alerts.bank("Debunked Photos", png("moon"))
    assert outcome(caught.value).status == 422  # type: ignore[union-attr]
    assert describe(caught.value).startswith("'Debunked Photos' is not a bank name")
