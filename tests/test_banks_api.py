"""Banks and alerts through the HTTP API of a real `imgsearch serve` on 127.0.0.1, and the pages.

Held-out photographs only (camera, moon, clock, text).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from app.runtime import Runtime
from embed.decode import sha256_of
from ingest.sources.folder import FolderSource
from search import edits
from store.keys import point_id
from tests.conftest import make_settings, photo
from tests.test_api import TOKEN, Served, start_serve, stop
from tests.test_ui import UI, open_page, plain

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAMERA_RESIZED = edits.apply("resize", photo("camera"), 0)


def png(name: str) -> bytes:
    buffer = io.BytesIO()
    photo(name).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "picture.png") -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, "image/png")}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose catalog holds a resized camera photo and the text photo."""
    root = tmp_path_factory.mktemp("banks-api")
    folder = root / "photos"
    folder.mkdir()
    (folder / "camera.jpg").write_bytes(CAMERA_RESIZED)
    (folder / "camera.json").write_text(
        '{"title": "Man with a camera", "source_uri": "https://news.example/camera"}'
    )
    (folder / "text.jpg").write_bytes(edits.apply("recompress", photo("text"), 0))
    with Runtime(make_settings(root / "data")) as runtime:
        runtime.pipeline.run([FolderSource("news", folder)])
    return root / "data"


@pytest.fixture(scope="module")
def client(catalog: Path) -> Iterator[httpx.Client]:
    server: Served = start_serve(
        catalog, catalog.parent / "serve.log", API__TOKEN=TOKEN, VERDICT__SSCD_WEIGHTS="off"
    )
    try:
        with httpx.Client(base_url=server.api(""), timeout=60) as http:
            yield http
    finally:
        stop(server)


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return str(body["error"])


def test_writes_need_the_token(client: httpx.Client) -> None:
    files = upload(png("moon"))
    assert error_of(client.post("/banks/debunked/entries", files=files), 401).startswith(
        "This endpoint needs the API token"
    )
    wrong = {"Authorization": "Bearer nope"}
    assert error_of(client.post("/banks/debunked/entries", files=files, headers=wrong), 403)
    assert client.get("/banks/debunked").json() == {"bank": "debunked", "entries": []}


def test_banking_an_upload_and_a_catalog_id_alerts_and_every_check_names_the_bank(
    client: httpx.Client,
) -> None:
    added = client.post(
        "/banks/debunked/entries",
        files=upload(png("camera"), "camera.png"),
        data={"note": "staged", "link": "https://factcheck.example/camera", "added_by": "desk"},
        headers=AUTH,
    )
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["new"] is True
    assert body["entry"]["banks"][0]["note"] == "staged"
    assert body["entry"]["banks"][0]["added_by"] == "desk"
    catalog_id = point_id(sha256_of(CAMERA_RESIZED))
    assert [(a["image"]["id"], a["found"]) for a in body["alerts"]] == [(catalog_id, "retroactive")]
    assert body["alerts"][0]["image"]["source_uri"] == "https://news.example/camera"
    again = client.post("/banks/debunked/entries", files=upload(png("camera")), headers=AUTH)
    assert again.status_code == 200 and again.json()["new"] is False

    by_id = client.post(
        "/banks/verified", data={"image_id": catalog_id}, headers=AUTH
    )  # no such path: the route is /entries
    assert by_id.status_code == 405
    by_id = client.post(
        "/banks/verified/entries", data={"image_id": catalog_id, "note": "ok"}, headers=AUTH
    )
    assert by_id.status_code == 201, by_id.text
    assert by_id.json()["entry"]["sha256"] == sha256_of(CAMERA_RESIZED)

    assert client.get("/banks").json() == {
        "banks": [{"bank": "debunked", "entries": 1}, {"bank": "verified", "entries": 1}]
    }
    check = client.post(
        "/check",
        files={"image": ("q.jpg", edits.apply("mirror+caption", photo("camera"), 5), "image/jpeg")},
    ).json()
    assert list(check)[1] == "banks"
    assert {(b["bank"], b["note"]) for b in check["banks"]} == {
        ("debunked", "staged"),
        ("verified", "ok"),
    }
    alerts = client.get("/alerts").json()["alerts"]
    assert len(alerts) == 2 and {a["bank"] for a in alerts} == {"debunked", "verified"}
    assert [
        a["bank"] for a in client.get("/alerts", params={"bank": "verified"}).json()["alerts"]
    ] == ["verified"]


def test_removing_an_entry_and_the_mistakes_get_one_sentence(client: httpx.Client) -> None:
    added = client.post("/banks/scratch/entries", files=upload(png("clock")), headers=AUTH)
    entry = added.json()["entry"]["id"]
    removed = client.delete(f"/banks/scratch/entries/{entry}", headers=AUTH)
    assert removed.json() == {"removed": entry, "bank": "scratch", "banks": []}
    gone = client.delete(f"/banks/scratch/entries/{entry}", headers=AUTH)
    assert error_of(gone, 404) == f"There is no entry {entry} in the bank scratch."
    assert error_of(client.get("/banks/Not A Bank"), 422)
    both = client.post(
        "/banks/scratch/entries",
        files=upload(png("clock")),
        data={"image_id": entry},
        headers=AUTH,
    )
    assert error_of(both, 422).startswith("Send exactly one of `image`")
    not_image = client.post("/banks/scratch/entries", files=upload(b"not a picture"), headers=AUTH)
    assert error_of(not_image, 400).startswith("That file is not a usable image")
    unknown = client.post(
        "/banks/scratch/entries", data={"image_id": entry}, headers=AUTH
    )  # an entry id is not a catalog id
    assert error_of(unknown, 404) == f"No image with id {entry} is in the catalog."
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/banks/{bank}/entries"]["post"]["requestBody"]["content"]
    assert set(body["multipart/form-data"]["schema"]["properties"]) >= {"image", "image_id"}


# -- the pages --------------------------------------------------------------------------


def app_for(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("IMGSEARCH_EMBED__WEIGHTS", "random")
    monkeypatch.setenv("IMGSEARCH_EMBED__DEVICE", "cpu")
    monkeypatch.setenv("IMGSEARCH_VERDICT__SSCD_WEIGHTS", "off")
    return AppTest.from_file(UI, default_timeout=120)


def test_the_banks_page_adds_shows_and_removes_and_the_search_page_names_the_bank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "moon.jpg").write_bytes(edits.apply("resize", photo("moon"), 0))
    with Runtime(make_settings(data)) as runtime:
        runtime.pipeline.run([FolderSource("wire", folder)])
    at = open_page(app_for(data, monkeypatch).run(), "banks")
    assert not at.exception
    assert [i.value for i in at.info] == ["No banks yet: add a picture above to make one."]
    at.file_uploader(key="bank_file").set_value(("moon.png", png("moon"), "image/png"))
    at.text_input(key="bank_note").input("The moon landing hoax picture")
    at.text_input(key="bank_link").input("https://factcheck.example/moon")
    at.button(key="FormSubmitter:bank_add-Add to the bank").click().run()
    assert not at.exception and not at.error
    (done,) = at.success
    assert "Added to bank debunked" in plain(done.value)
    assert "1 alert(s)" in done.value
    assert any(plain(m.value) == "The moon landing hoax picture" for m in at.markdown)
    assert len(at.image) == 1  # the entry's thumbnail

    at = open_page(at, "alerts")
    (table,) = at.dataframe
    assert list(table.value["bank"]) == ["debunked"]
    assert list(table.value["how"]) == ["retroactive"]

    at = open_page(at, "search")
    query = edits.apply("mirror", photo("moon"), 1)
    at.file_uploader[0].set_value(("q.jpg", query, "image/jpeg")).run()
    assert not at.exception
    assert plain(at.error[0].value).startswith(
        "**Known fake: in bank debunked, The moon landing hoax picture, "
        "https://factcheck.example/moon"
    )

    at = open_page(at, "banks")
    (remove,) = [b for b in at.button if b.label == "Remove"]
    remove.click().run()
    assert not at.exception
    assert [i.value for i in at.info] == ["No banks yet: add a picture above to make one."]
