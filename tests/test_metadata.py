"""The picture's own metadata and Content Credentials, and the warnings they raise."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.present import metadata_rows, verdict_text
from app.runtime import Runtime
from config import MetadataSettings
from embed.credentials import TrustAnchorsUnreadable
from embed.metadata import Metadata, MetadataReader
from ingest.sources import FolderSource
from search.provenance import (
    AI_GENERATED,
    CAPTURED_AFTER_PUBLISHED,
    CREDENTIALS_INVALID,
    warnings_for,
)
from tests.conftest import make_settings, photo
from tests.metadata_files import (
    AI,
    CAPTURE,
    XMP_HEADER,
    camera_file,
    entity_bomb,
    jpeg,
    make_signing,
    tamper_pixels,
    with_segment,
    with_tags,
    xmp_packet,
)

PICTURE = photo("coffee").resize((200, 133))


@pytest.fixture(scope="module")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    trusted = make_signing("Trusted Newsroom")
    stranger = make_signing("Anyone")
    anchors = tmp_path_factory.mktemp("trust") / "anchors.pem"
    anchors.write_bytes(trusted.ca_pem)
    plain = jpeg(PICTURE)
    return {
        "anchors": anchors,
        "trusted": trusted.sign(plain),
        "untrusted": stranger.sign(plain, source_type=CAPTURE),
        "tampered": tamper_pixels(trusted.sign(plain)),
    }


def read(data: bytes, content_type: str = "image/jpeg", **settings: Any) -> dict[str, Any]:
    return MetadataReader(MetadataSettings(**settings)).read(data, content_type).as_dict()


def test_camera_exif_iptc_and_xmp_are_read_into_the_fields() -> None:
    found = read(camera_file(PICTURE))
    assert found == {
        "captured_at": "2024-05-06T07:08:09+02:00",
        "camera": "Canon EOS R5",  # the make is not repeated when the model names it
        "software": "Adobe Photoshop 25.0",
        "gps": {"lat": 52.51, "lon": -13.4},
        "creator": "Jane Doe",  # XMP before IPTC
        "credit": "Wire",
        "caption": "Crowds at the harbour",
        "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture",
        "ai_generated": False,
    }


def test_a_bare_file_says_nothing_and_nothing_is_invented() -> None:
    for fmt in ("JPEG", "PNG", "WEBP"):
        buffer = io.BytesIO()
        PICTURE.save(buffer, fmt)
        assert read(buffer.getvalue(), f"image/{fmt.lower()}") == {}, fmt
    assert MetadataReader().read(jpeg(PICTURE), "image/jpeg").empty


def test_iptc_and_a_date_without_offset_are_kept_as_the_file_says() -> None:
    data = with_tags(
        jpeg(PICTURE),
        exif={"Exif.Photo.DateTimeOriginal": "2023:12:31 23:59:58", "Exif.Image.Make": "Nikon"},
        iptc={"Iptc.Application2.Caption": "Flooded street", "Iptc.Application2.Byline": ["A"]},
    )
    found = read(data)
    assert found["captured_at"] == "2023-12-31T23:59:58"  # local time: no offset invented
    assert found["camera"] == "Nikon"
    assert found["caption"] == "Flooded street"
    assert found["creator"] == "A"
    assert "ai_generated" not in found and "gps" not in found


def test_xmp_that_says_generative_ai_marks_the_picture_and_warns() -> None:
    data = with_tags(jpeg(PICTURE), xmp={"Xmp.iptcExt.DigitalSourceType": AI})
    metadata = MetadataReader().read(data, "image/jpeg")
    assert metadata.ai_generated is True
    assert [w.code for w in warnings_for(metadata)] == [AI_GENERATED]
    assert "generative model" in warnings_for(metadata)[0].message


def test_an_xmp_entity_bomb_costs_only_the_xmp_block() -> None:
    data = with_segment(camera_file(PICTURE, taken="2020:01:02 03:04:05"), entity_bomb())
    started = time.perf_counter()
    found = read(data)
    assert time.perf_counter() - started < 5  # not expanded (a billion characters otherwise)
    assert found["captured_at"] == "2020-01-02T03:04:05+02:00"  # EXIF still read
    assert "xmp" in found["unreadable"]


def test_an_oversized_xmp_packet_is_not_parsed() -> None:
    big = XMP_HEADER + xmp_packet(f'dc:format="{"x" * 60_000}"')
    data = with_segment(jpeg(PICTURE), big)
    assert read(data, max_xmp_bytes=1024) == {"unreadable": ["xmp"]}
    assert read(data) == {}  # under the default bound it is read (and names no field we keep)


def test_broken_exif_costs_only_the_exif_block() -> None:
    data = bytearray(camera_file(PICTURE))
    start = data.find(b"Exif\x00\x00") + 6
    data[start : start + 40] = b"\xff" * 40  # the TIFF header and first IFD destroyed
    found = read(bytes(data))
    assert found["unreadable"] == ["exif"]
    assert found["creator"] == "Jane Doe"  # XMP kept
    assert found["credit"] == "Wire"  # IPTC kept
    assert "camera" not in found and "captured_at" not in found


def test_garbage_and_truncated_files_never_raise() -> None:
    reader = MetadataReader()
    assert reader.read(b"not a picture", "image/jpeg").as_dict() in (
        {},
        {"unreadable": ["metadata"]},
    )
    cut = camera_file(PICTURE)[:300]
    assert isinstance(reader.read(cut, "image/jpeg"), Metadata)


def test_c2pa_signed_by_a_trust_anchor_reads_trusted(signing_files: dict[str, Any]) -> None:
    found = read(signing_files["trusted"], trust_anchors=str(signing_files["anchors"]))
    c2pa = found["c2pa"]
    assert c2pa == {
        "state": "trusted",
        "generator": "Newsroom Camera App 2.1",
        "signer": "Photo Desk Signer, Trusted Newsroom",
        "signed_at": None,
        "actions": ["c2pa.created"],
        "digital_source_type": AI,
        "errors": [],
    }
    assert found["ai_generated"] is True  # the C2PA action says so
    assert found["digital_source_type"] == AI


def test_c2pa_by_a_signer_not_in_the_trust_list_reads_valid(
    signing_files: dict[str, Any],
) -> None:
    for anchors in ("", str(signing_files["anchors"])):
        found = read(signing_files["untrusted"], trust_anchors=anchors)
        assert found["c2pa"]["state"] == "valid"
        assert found["c2pa"]["errors"] == []
        assert found["ai_generated"] is False  # a camera capture, as its action says


def test_c2pa_tampered_after_signing_reads_invalid_and_warns(
    signing_files: dict[str, Any],
) -> None:
    reader = MetadataReader(MetadataSettings(trust_anchors=str(signing_files["anchors"])))
    metadata = reader.read(signing_files["tampered"], "image/jpeg")
    assert metadata.c2pa is not None and metadata.c2pa.state == "invalid"
    assert "assertion.dataHash.mismatch" in metadata.c2pa.errors
    codes = [w.code for w in warnings_for(metadata)]
    assert codes == [AI_GENERATED, CREDENTIALS_INVALID]
    rows = dict(metadata_rows(metadata.as_dict()))
    assert rows["Content Credentials"].startswith("they do not hold")


def test_a_missing_trust_anchor_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(TrustAnchorsUnreadable, match="IMGSEARCH_METADATA__TRUST_ANCHORS"):
        MetadataReader(MetadataSettings(trust_anchors=str(tmp_path / "none.pem")))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TrustAnchorsUnreadable, match="no PEM certificate"):
        MetadataReader(MetadataSettings(trust_anchors=str(tmp_path / "junk.pem")))


def test_metadata_off_reads_nothing() -> None:
    assert read(camera_file(PICTURE), enabled=False) == {}


@pytest.mark.parametrize(
    ("captured", "published", "warns"),
    [
        ("2024-06-01T10:00:00+00:00", "2024-05-01T00:00:00Z", True),
        ("2024-05-01T12:00:00+02:00", "2024-05-01T11:00:00Z", False),  # 10:00 UTC: before
        ("2024-05-02T08:00:00", "2024-05-01T20:00:00Z", False),  # local time: could be before
        ("2024-05-03T08:00:00", "2024-05-01T20:00:00Z", True),  # no zone makes it before
        ("2024-05-02", "2024-05-01", False),  # dates alone, a day apart: zones decide
        ("2024-05-04", "2024-05-01", True),
        ("2024-04-01T00:00:00", "2024-05-01T00:00:00Z", False),
    ],
)
def test_captured_after_published_allows_for_time_zones(
    captured: str, published: str, warns: bool
) -> None:
    metadata = Metadata(captured_at=captured)
    timeline: list[dict[str, Any]] = [
        {"published_at": None, "first_seen": "2024-09-01T00:00:00Z", "source": "late"},
        {"published_at": published, "source": "Wire"},
    ]
    codes = [w.code for w in warnings_for(metadata, timeline)]
    assert codes == ([CAPTURED_AFTER_PUBLISHED] if warns else [])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A catalog holding a camera photo (with metadata) and a C2PA-signed one."""
    root = tmp_path_factory.mktemp("metadata")
    folder = root / "wire"
    folder.mkdir()
    (folder / "harbour.jpg").write_bytes(camera_file(photo("chelsea"), "2024:05:06 07:08:09"))
    (folder / "harbour.json").write_text(
        json.dumps({"title": "Harbour", "published_at": "2024-05-07T09:00:00Z"})
    )
    signing = make_signing()
    (folder / "made.jpg").write_bytes(signing.sign(jpeg(photo("astronaut").resize((384, 384)))))
    runtime = Runtime(make_settings(root / "data", verdict={"sscd_weights": "off"}))
    report = runtime.pipeline.run([FolderSource("wire", folder)])
    assert report.total().new == 2
    yield runtime
    runtime.close()


def test_ingested_files_keep_their_metadata_in_the_payload(catalog: Runtime) -> None:
    payloads = {str(r.payload.get("title")): r.payload for r in catalog.index.scroll()}
    assert payloads["Harbour"]["metadata"]["camera"] == "Canon EOS R5"
    assert payloads["Harbour"]["metadata"]["captured_at"] == "2024-05-06T07:08:09+02:00"
    made = next(p for p in payloads.values() if p.get("title") != "Harbour")
    assert made["metadata"]["c2pa"]["state"] == "valid"
    assert made["metadata"]["ai_generated"] is True


def test_a_copy_whose_capture_date_is_after_the_first_publication_warns(catalog: Runtime) -> None:
    copy = camera_file(photo("chelsea").resize((400, 300)), "2024:06:20 10:00:00")
    answer = catalog.search.search_bytes(copy, top_k=3).as_check("later.jpg")
    assert answer["verdict"] == "copy"
    assert answer["metadata"]["captured_at"] == "2024-06-20T10:00:00+02:00"
    assert [w["code"] for w in answer["warnings"]] == [CAPTURED_AFTER_PUBLISHED]
    assert "2024-05-07" in answer["warnings"][0]["message"]
    # the same capture date as the original's: no warning
    same = camera_file(photo("chelsea").resize((400, 300)), "2024:05:06 07:08:09")
    assert catalog.search.search_bytes(same, top_k=3).as_check("same.jpg")["warnings"] == []


def test_a_bare_upload_has_empty_metadata_and_no_warning(catalog: Runtime) -> None:
    bare = jpeg(Image.new("RGB", (64, 64), (30, 90, 160)))
    answer = catalog.search.search_bytes(bare, top_k=3).as_check("bare.jpg")
    assert answer["metadata"] == {} and answer["warnings"] == []


def test_the_search_answer_carries_metadata_and_warnings(catalog: Runtime) -> None:
    data = with_tags(jpeg(photo("rocket")), xmp={"Xmp.iptcExt.DigitalSourceType": AI})
    out = catalog.search.search_bytes(data, top_k=3).as_dict()
    assert out["metadata"]["ai_generated"] is True
    assert [w["code"] for w in out["warnings"]] == [AI_GENERATED]


def test_the_cli_text_names_the_warnings_and_what_the_file_says(catalog: Runtime) -> None:
    copy = camera_file(photo("chelsea").resize((400, 300)), "2024:06:20 10:00:00")
    lines = verdict_text("later.jpg", catalog.search.search_bytes(copy, top_k=3))
    text = "\n".join(lines)
    assert "warning (captured_after_published): Its metadata says it was taken 2024-06-20" in text
    assert "      Camera: Canon EOS R5" in lines
    assert "      Location: 52.51000, -13.40000" in lines


def test_reindex_reads_the_metadata_of_images_ingested_without_it(tmp_path: Path) -> None:
    from ingest.reindex import backfill_metadata

    folder = tmp_path / "wire"
    folder.mkdir()
    (folder / "harbour.jpg").write_bytes(camera_file(photo("coffee").resize((240, 160))))
    (folder / "bare.jpg").write_bytes(jpeg(photo("rocket").resize((240, 160))))
    off = make_settings(tmp_path / "data", metadata={"enabled": False})
    with Runtime(off) as runtime:
        runtime.pipeline.run([FolderSource("wire", folder)])
        assert all("metadata" not in hit.payload for hit in runtime.index.scroll())  # not read
        assert backfill_metadata(runtime.index, runtime.images, runtime.metadata).checked == 0
        reader = MetadataReader(MetadataSettings())
        report = backfill_metadata(runtime.index, runtime.images, reader)
        assert (report.checked, report.updated, report.failed) == (2, 2, [])
        found = {
            str(hit.payload["sha256"])[:8]: hit.payload["metadata"]
            for hit in runtime.index.scroll()
        }
        assert sorted(m.get("camera", "") for m in found.values()) == ["", "Canon EOS R5"]
        assert backfill_metadata(runtime.index, runtime.images, reader).checked == 0  # all read
