"""The HTTP API as a client sees it: `imgsearch serve` on 127.0.0.1, a real HTTP client.

One server with a small catalog and an API token serves most tests (module-scoped); a second,
whose Qdrant server does not answer, gives the 503s. The last test stops the first server with
SIGTERM and reads its stderr.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.runtime import Runtime
from embed.decode import sha256_of
from ingest.sources.folder import FolderSource
from store.keys import point_id
from tests.conftest import free_port, image_bytes, make_settings
from tests.feed_server import FeedServer
from tests.metadata_files import AI, with_tags
from tests.subprocesses import child_env, wait_for

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-tests"
STARTUP_S = 120


@dataclass
class Served:
    """A running `imgsearch serve`."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def api(self, path: str) -> str:
        return f"{self.url}/api{path}"


def start_serve(data_dir: Path, log: Path, **settings: str) -> Served:
    port = free_port()
    stderr = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=child_env(data_dir, None, **settings),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    stderr.close()
    served = Served(f"http://127.0.0.1:{port}", process, log)

    def answering() -> bool:
        assert process.poll() is None, f"serve exited: {log.read_text()[-2000:]}"
        try:
            response = httpx.get(served.api("/health"), timeout=5)
        except httpx.HTTPError:
            return False
        return "still loading" not in response.text

    wait_for(answering, STARTUP_S, "imgsearch serve to load its model")
    return served


def stop(served: Served) -> None:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


def pid(data: bytes) -> str:
    return point_id(sha256_of(data))


@pytest.fixture(scope="module")
def photos() -> Iterator[FeedServer]:
    """Images on a loopback web server, for search by URL."""
    with FeedServer() as server:
        server.add("/storm.jpg", image_bytes(803), "image/jpeg")
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, photos: FeedServer) -> Iterator[Served]:
    """`imgsearch serve` over a 6-image catalog, with an API token and the photo server allowed."""
    root = tmp_path_factory.mktemp("api")
    folder = root / "photos"
    folder.mkdir()
    for seed in range(800, 806):
        (folder / f"p{seed}.jpg").write_bytes(image_bytes(seed))
        (folder / f"p{seed}.json").write_text(
            json.dumps(
                {
                    "title": f"Picture {seed}",
                    "category": "odd" if seed % 2 else "even",
                    "published_at": f"2024-0{seed - 799}-15",
                }
            )
        )
    runtime = Runtime(make_settings(root / "data"))
    try:
        runtime.pipeline.run([FolderSource("news", folder)])
    finally:
        runtime.close()  # the server takes the embedded index next
    server = start_serve(
        root / "data",
        root / "serve.log",
        API__TOKEN=TOKEN,
        FETCH__ALLOWED_PRIVATE_HOSTS=json.dumps([photos.host_port]),
    )
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.api(""), timeout=60) as http:
        yield http


def upload(data: bytes, name: str = "photo.jpg") -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, "image/jpeg")}


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"].endswith(".")
    assert "Traceback" not in body["error"]
    return str(body["error"])


# -- reads -----------------------------------------------------------------------------------
def test_health_says_ok_when_the_model_and_index_answer(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["images"] == 6


def test_an_uploaded_catalog_photo_is_found_first_with_the_verdict(client: httpx.Client) -> None:
    data = image_bytes(802)
    response = client.post("/search", files=upload(data), data={"top_k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verdict"] == "exact" and len(body["matches"]) == 3
    first = body["matches"][0]
    assert first["id"] == pid(data) and first["payload"]["title"] == "Picture 802"
    assert {"id", "score", "payload"} <= set(first)


def test_search_by_url_fetches_from_an_allowed_loopback_server(
    client: httpx.Client, photos: FeedServer
) -> None:
    before = photos.hits("/storm.jpg")
    response = client.post("/search", json={"url": photos.url("/storm.jpg"), "top_k": 2})
    assert response.status_code == 200, response.text
    assert response.json()["matches"][0]["id"] == pid(image_bytes(803))
    assert photos.hits("/storm.jpg") == before + 1


def test_a_url_the_fetch_policy_refuses_is_400_and_never_fetched(
    client: httpx.Client, photos: FeedServer
) -> None:
    before = photos.hits("/storm.jpg")
    refused = f"http://localhost:{photos.port}/storm.jpg"  # only 127.0.0.1:PORT is allowed
    error = assert_error(client.post("/search", json={"url": refused}), 400)
    assert "refused" in error
    assert photos.hits("/storm.jpg") == before


def test_positive_and_negative_ids_leave_the_examples_out(client: httpx.Client) -> None:
    a, b = pid(image_bytes(800)), pid(image_bytes(801))
    response = client.post(
        "/search", json={"positive": [a], "negative": [b], "top_k": 10, "strategy": "best_score"}
    )
    assert response.status_code == 200, response.text
    ids = [m["id"] for m in response.json()["matches"]]
    assert len(ids) == 4 and a not in ids and b not in ids
    assert "verdict" not in response.json()


def test_multipart_positive_ids_filters_and_paging(client: httpx.Client) -> None:
    a = pid(image_bytes(800))
    form = {"positive": a, "category": "odd", "top_k": "2"}
    page1 = client.post("/search", data=form)  # a URL-encoded form (curl -d)
    multipart = {name: (None, value) for name, value in {**form, "offset": "2"}.items()}
    page2 = client.post("/search", files=multipart)  # multipart/form-data without a file
    assert page1.status_code == page2.status_code == 200, page1.text + page2.text
    ids = [m["id"] for m in page1.json()["matches"] + page2.json()["matches"]]
    assert sorted(ids) == sorted(pid(image_bytes(s)) for s in (801, 803, 805))
    dated = client.post(
        "/search",
        json={"positive": [a], "filter": {"since": "2024-02-01", "until": "2024-03-15"}},
    )
    titles = sorted(m["payload"]["title"] for m in dated.json()["matches"])
    assert titles == ["Picture 801", "Picture 802"]  # until a bare date takes that whole day


def test_check_answers_like_the_cli(client: httpx.Client) -> None:
    response = client.post("/check", files=upload(image_bytes(804), "p804.jpg"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == "p804.jpg" and body["verdict"] == "exact"
    assert body["original"]["id"] == pid(image_bytes(804))
    assert {"evidence", "timeline", "copies", "matches", "metadata", "warnings"} <= set(body)
    assert body["metadata"] == {} and body["warnings"] == []  # a bare file: nothing invented


def test_check_returns_the_files_own_metadata_and_its_warnings(client: httpx.Client) -> None:
    data = with_tags(
        image_bytes(804),
        exif={"Exif.Image.Make": "Leica", "Exif.Photo.DateTimeOriginal": "2025:03:04 05:06:07"},
        xmp={"Xmp.iptcExt.DigitalSourceType": AI},
    )
    body = client.post("/check", files=upload(data, "tagged.jpg")).json()
    assert body["verdict"] == "copy"  # the same pixels, other bytes
    assert body["metadata"]["camera"] == "Leica"
    assert body["metadata"]["captured_at"] == "2025-03-04T05:06:07"
    assert body["metadata"]["ai_generated"] is True
    codes = {w["code"] for w in body["warnings"]}
    assert codes == {"ai_generated", "captured_after_published"}  # first published in 2024


def test_a_record_its_thumbnail_and_original(client: httpx.Client) -> None:
    data = image_bytes(805)
    record = client.get(f"/images/{pid(data)}").json()
    assert record["payload"]["title"] == "Picture 805" and len(record["timeline"]) == 1
    thumb = client.get(f"/images/{pid(data)}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    original = client.get(f"/images/{pid(data)}/original")
    assert original.content == data


def test_stats(client: httpx.Client) -> None:
    stats = client.get("/stats").json()
    assert stats["sources"] == {"news": 6} and stats["total"] == 6
    assert stats["categories"]["odd"] == 3
    assert stats["months"]["2024-01"] == 1


def test_docs_render_and_describe_every_endpoint(served: Served, client: httpx.Client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert "/api/openapi.json" in docs.text
    spec = client.get("/openapi.json").json()
    assert {"/search", "/check", "/images", "/images/{image_id}", "/stats", "/health"} <= set(
        spec["paths"]
    )
    search = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} == set(search)
    # The page is still there on the same port.
    assert httpx.get(f"{served.url}/_stcore/health").text == "ok"


def test_the_schema_says_what_the_server_accepts(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    check = spec["paths"]["/check"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "image/jpeg" in check["encoding"]["image"]["contentType"]
    assert check["schema"]["required"] == ["image"]
    record = spec["paths"]["/images/{image_id}"]["get"]["parameters"][0]
    assert record["schema"]["format"] == "uuid"
    body = spec["components"]["schemas"]["SearchBody"]
    assert "text" not in body["properties"]  # no text model on this server
    assert {"required": ["url"], "properties": {"url": {"type": "string"}}} in body["anyOf"]
    # What the schema rejects, the server rejects.
    assert_error(client.post("/search", json={}), 422)
    assert_error(client.get("/images/not-a-uuid"), 422)
    assert_error(client.post("/check", files=upload(image_bytes(801)), data={"top_k": "5000"}), 422)


def test_a_method_not_allowed_lists_every_allowed_method(client: httpx.Client) -> None:
    response = client.put("/images/0f8fad5b-d9cb-469f-a165-70867728950e")
    assert_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}


def test_an_id_with_a_line_break_gets_the_api_json_answer(client: httpx.Client) -> None:
    response = client.get("/images/a%0Ab/thumbnail")
    assert response.headers["content-type"] == "application/json"
    assert_error(response, 422)


# -- errors ----------------------------------------------------------------------------------
def test_a_file_that_is_not_an_image_is_400(client: httpx.Client) -> None:
    error = assert_error(client.post("/search", files=upload(b"%PDF-1.4 hello", "a.pdf")), 400)
    assert error.startswith("That file is not a usable image")


def test_an_upload_above_the_limit_is_413_before_the_body_is_read(served: Served) -> None:
    # Content-Length says 60 MB but only 1 MB is sent: the answer must come anyway.
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            + f"Content-Length: {60 * 1024 * 1024}\r\n\r\n".encode()
            + b"--xyz\r\n"
            + b"\0" * (1024 * 1024)
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body) == {"error": "The upload is larger than the limit of 50 MB."}


def test_a_60_mb_upload_is_413_json(client: httpx.Client) -> None:
    big = b"\xff\xd8\xff" + b"\0" * (60 * 1024 * 1024)
    try:
        response = client.post("/search", files=upload(big))
    except httpx.WriteError:  # the server may close before the client finished sending
        pytest.skip("the server closed the connection before the client read the answer")
    error = assert_error(response, 413)
    assert "50 MB" in error


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "JSON"),
        (b'{"top_k": "many", "positive": ["x"]}', "top_k"),
        (b'{"positiv": ["x"]}', "positiv"),
        (b"{}", "at least one example"),
        (b'{"positive": ["nope"]}', "not an image id"),
    ],
)
def test_a_bad_request_is_422_in_one_sentence(
    client: httpx.Client, body: bytes, words: str
) -> None:
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert words in assert_error(response, 422)


def test_an_unknown_id_is_404(client: httpx.Client) -> None:
    missing = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert_error(client.get(f"/images/{missing}"), 404)
    assert_error(client.get(f"/images/{missing}/thumbnail"), 404)
    assert_error(client.post("/search", json={"positive": [missing]}), 404)
    assert_error(client.get("/no-such-endpoint"), 404)


def test_text_search_without_a_text_model_is_503_with_what_to_set(client: httpx.Client) -> None:
    assert "IMGSEARCH_TEXT__ENABLED" in assert_error(
        client.post("/search", json={"text": "a bridge"}), 503
    )


# -- writes ----------------------------------------------------------------------------------
def test_writes_need_the_token(client: httpx.Client) -> None:
    some = pid(image_bytes(800))
    missing = client.delete(f"/images/{some}")
    assert "IMGSEARCH_API__TOKEN" in assert_error(missing, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer not-the-token"}
    assert_error(client.post("/images", files=upload(image_bytes(900)), headers=wrong), 403)
    assert_error(client.delete(f"/images/{some}", headers=wrong), 403)
    assert client.get(f"/images/{some}").status_code == 200  # still there


def test_an_added_image_is_found_first_with_its_title_then_deleted(
    served: Served, client: httpx.Client
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    data = image_bytes(901)
    fields = {
        "title": "Ferry arrives",
        "source_uri": "https://paper.example/ferry",
        "published_at": "2024-07-01",
    }
    added = client.post("/images", files=upload(data), data=fields, headers=auth)
    assert added.status_code == 201, added.text
    new_id = added.json()["id"]
    assert new_id == pid(data) and added.json()["status"] == "new"

    found = client.post("/search", files=upload(data), data={"top_k": "1"}).json()
    assert found["matches"][0]["id"] == new_id
    assert found["matches"][0]["payload"]["title"] == "Ferry arrives"

    again = client.post(
        "/images", files=upload(data), data={"source_uri": "https://b.example/x"}, headers=auth
    )
    assert again.status_code == 200 and again.json()["status"] == "known"
    assert len(client.get(f"/images/{new_id}").json()["timeline"]) == 2

    bad_date = client.post(
        "/images", files=upload(image_bytes(902)), data={"published_at": "soon"}, headers=auth
    )
    assert "not readable" in assert_error(bad_date, 422)
    assert_error(client.post("/images", files=upload(b"nope"), headers=auth), 400)

    deleted = client.delete(f"/images/{new_id}", headers=auth)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == new_id
    assert_error(client.get(f"/images/{new_id}"), 404)
    assert_error(client.get(f"/images/{new_id}/original"), 404)
    after = client.post("/search", files=upload(data), data={"top_k": "3"}).json()
    assert new_id not in [m["id"] for m in after["matches"]]
    assert after["verdict"] != "exact"


# -- the index down --------------------------------------------------------------------------
def test_an_index_that_does_not_answer_is_503(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = start_serve(tmp_path / "data", tmp_path / "serve.log", QDRANT__URL=dead)
    try:
        with httpx.Client(base_url=server.api(""), timeout=60) as http:
            health = http.get("/health")
            assert "did not answer" in assert_error(health, 503)
            assert_error(http.post("/search", files=upload(image_bytes(800))), 503)
            assert_error(http.get("/stats"), 503)
    finally:
        stop(server)


def test_sigterm_while_the_model_loads_waits_for_it_and_exits_0(tmp_path: Path) -> None:
    # Stopped as soon as the page answers, while the models are still loading in a background
    # thread: the stop must wait for that load (ONNX Runtime aborts a process that exits under
    # a session being built) and end with exit status 0.
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=child_env(tmp_path / "data", None),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def page_up() -> bool:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).is_success
            except httpx.HTTPError:
                return False

        wait_for(page_up, STARTUP_S, "the page to answer", every=0.05)
        loading = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
        if loading.status_code != 503:  # a machine fast enough to load within milliseconds
            pytest.skip("the models had finished loading before the stop: no race to check")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=150) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "terminate called" not in text and "Traceback" not in text, text[-3000:]
    assert "imgsearch.api: stopped" in text


# A search on a page runs on a Streamlit script thread, a daemon. The child stands in for that
# thread with one that embeds without pause, then ends as `serve` ends after its shutdown.
_EXIT_UNDER_A_SEARCH = """
import sys, threading, time
from PIL import Image
from app.server import leave
from config import Settings
from embed.encoder import load_encoder
encoder = load_encoder(Settings().embed)
photo = Image.new("RGB", (320, 240), (90, 120, 30))
busy = threading.Event()
def embed_forever():
    while True:
        busy.set()
        encoder.embed([photo] * 4)
threading.Thread(target=embed_forever, daemon=True).start()
busy.wait(120)
time.sleep(0.3)
print("leaving", flush=True)
leave(0)
"""


def test_serve_exits_0_while_a_daemon_thread_is_inside_the_model(tmp_path: Path) -> None:
    # The interpreter's own teardown aborts under a thread running model code (SIGABRT, exit
    # 134: measured 9 of 9 with sys.exit in this child); `leave`, which serve ends with, exits 0.
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _EXIT_UNDER_A_SEARCH],
            cwd=ROOT,
            env=child_env(tmp_path / "data", None),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "leaving"
        assert "terminate called" not in done.stderr


# -- shutdown (last: it stops the module's server) ----------------------------------------------
def test_sigterm_stops_serve_cleanly_without_a_traceback(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    status = served.process.wait(timeout=30)
    log = served.stderr.read_text()
    assert status == 0, log[-3000:]
    assert "Traceback" not in log and "Exception ignored" not in log, log[-3000:]
    assert "imgsearch.api: stopped" in log
    # The embedded index was released: another process can open it now.
    runtime = Runtime(make_settings(served.stderr.parent / "data"))
    try:
        assert runtime.index.count() == 6
    finally:
        runtime.close()
