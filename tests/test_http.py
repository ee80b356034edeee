"""The downloader against a real HTTP server on loopback: caps, checks, retries, host limits."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from config import FetchSettings
from ingest.http import Downloader, image_signature
from ingest.items import FetchError
from ingest.netguard import Policy, Refused
from tests.conftest import image_bytes
from tests.feed_server import FeedServer


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def fast_settings(**overrides: object) -> FetchSettings:
    values: dict[str, object] = {
        "connect_timeout_s": 2.0,
        "read_timeout_s": 0.5,
        "retries": 2,
        "backoff_s": 0.01,
        "per_host": 2,
        "max_bytes": 200_000,
        # The test servers listen on loopback, which the downloader refuses unless allowed.
        "allowed_private_hosts": ["127.0.0.1"],
    }
    values.update(overrides)
    return FetchSettings.model_validate(values)


@pytest.fixture
def downloader() -> Iterator[Downloader]:
    with Downloader(fast_settings()) as client:
        yield client


def test_a_good_image_downloads_with_an_imgsearch_user_agent(
    server: FeedServer, downloader: Downloader
) -> None:
    data = image_bytes(1)
    url = server.add("/a.jpg", data, "image/jpeg")
    assert downloader.image(url) == data
    assert "imgsearch" in server.requests[0].user_agent


def test_a_404_fails_at_once_and_stays_retryable_for_the_quarantine(
    server: FeedServer, downloader: Downloader
) -> None:
    with pytest.raises(FetchError) as caught:
        downloader.image(server.url("/missing.jpg"))
    assert caught.value.reason == "HTTP 404"
    assert caught.value.retryable
    assert server.hits("/missing.jpg") == 1


def test_a_500_is_retried_and_then_succeeds(server: FeedServer, downloader: Downloader) -> None:
    data = image_bytes(2, "PNG")
    url = server.add("/flaky.png", data, "image/png", fail_first=2)
    assert downloader.image(url) == data
    assert server.hits("/flaky.png") == 3


def test_a_server_that_keeps_failing_gives_up_after_the_configured_retries(
    server: FeedServer, downloader: Downloader
) -> None:
    url = server.add("/down.jpg", b"", "image/jpeg", status=503)
    with pytest.raises(FetchError, match=r"HTTP 503 \(after 3 attempts\)"):
        downloader.image(url)
    assert server.hits("/down.jpg") == 3


def test_a_slow_server_times_out_on_every_attempt(server: FeedServer) -> None:
    url = server.add("/slow.jpg", image_bytes(3), "image/jpeg", delay_s=3)
    started = time.monotonic()
    with Downloader(fast_settings(retries=1)) as client, pytest.raises(FetchError) as caught:
        client.image(url)
    assert caught.value.reason.startswith("timed out (read)")
    assert caught.value.retryable
    assert server.hits("/slow.jpg") == 2
    assert time.monotonic() - started < 2.5


def test_html_served_for_an_image_url_is_refused_by_content_type(
    server: FeedServer, downloader: Downloader
) -> None:
    url = server.add("/page.jpg", "<html><body>sorry</body></html>", "text/html; charset=utf-8")
    with pytest.raises(FetchError) as caught:
        downloader.image(url)
    assert caught.value.reason == "not an image (content-type text/html)"
    assert not caught.value.retryable


def test_bytes_without_an_image_signature_are_refused(
    server: FeedServer, downloader: Downloader
) -> None:
    url = server.add("/fake.jpg", b"this is plain text pretending" * 4, "application/octet-stream")
    with pytest.raises(FetchError, match="unrecognised file signature"):
        downloader.image(url)


def test_an_image_past_the_size_cap_is_refused_declared_or_streamed(server: FeedServer) -> None:
    big = b"\xff\xd8\xff" + b"\0" * 5000
    url = server.add("/big.jpg", big, "image/jpeg")
    with Downloader(fast_settings(max_bytes=1000)) as client:
        with pytest.raises(FetchError) as caught:
            client.image(url)
        assert caught.value.reason == "larger than 1000 bytes"
        assert not caught.value.retryable
        # No Content-Length to trust: the streamed count must stop it too.
        unsized = server.add("/unsized.jpg", big, "image/jpeg", send_length=False)
        with pytest.raises(FetchError, match="larger than 1000 bytes"):
            client.image(unsized)


def test_redirects_are_followed_but_loops_are_not(
    server: FeedServer, downloader: Downloader
) -> None:
    data = image_bytes(4)
    server.add("/real.jpg", data, "image/jpeg")
    moved = server.add("/moved.jpg", b"", None, status=302, headers={"Location": "/real.jpg"})
    assert downloader.image(moved) == data
    loop = server.add("/loop.jpg", b"", None, status=302, headers={"Location": "/loop.jpg"})
    with pytest.raises(FetchError, match="redirects"):
        downloader.image(loop)


def test_documents_skip_image_checks_but_keep_their_type_and_final_url(
    server: FeedServer, downloader: Downloader
) -> None:
    url = server.add("/feed", "<rss version='2.0'></rss>", "application/rss+xml; charset=utf-8")
    document = downloader.document(url)
    assert (document.url, document.content_type, document.charset) == (
        url,
        "application/rss+xml",
        "utf-8",
    )
    assert document.text.startswith("<rss")


def test_no_more_than_per_host_requests_are_open_at_once(server: FeedServer) -> None:
    data = image_bytes(5)
    urls = [server.add(f"/p{i}.jpg", data, "image/jpeg", delay_s=0.1) for i in range(10)]
    with Downloader(fast_settings(per_host=2)) as client, ThreadPoolExecutor(8) as pool:
        assert all(got == data for got in pool.map(client.image, urls))
    assert server.max_concurrent == 2


def test_signatures_of_every_accepted_format_are_recognised() -> None:
    for fmt, expected in (
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("GIF", "GIF"),
        ("WEBP", "WEBP"),
        ("BMP", "BMP"),
        ("TIFF", "TIFF"),
    ):
        assert image_signature(image_bytes(6, fmt)[:16]) == expected
    assert image_signature(b"<html>") is None


# -- private networks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("localhost", "a loopback address"),  # a name: checked after resolving, in the backend
        ("2130706433", "a loopback address"),  # decimal
        ("0177.0.0.1", "a loopback address"),  # octal
        ("0x7f.1", "a loopback address"),  # hex, short form
        ("[::1]", "a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address"),  # IPv4-mapped IPv6
        ("[64:ff9b::7f00:1]", "a NAT64 address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata
        ("10.1.2.3", "a private address"),
        ("[fd00::1]", "a private address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.1.1", "a multicast address"),
    ],
)
def test_private_addresses_in_any_spelling_are_refused_before_connecting(
    host: str, problem: str
) -> None:
    with (
        Downloader(fast_settings(allowed_private_hosts=[])) as client,
        pytest.raises(FetchError) as caught,
    ):
        client.image(f"http://{host}/latest/meta-data")
    reason = caught.value.reason
    assert reason.startswith("refused: ") and problem in reason, reason
    assert "IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS" in reason
    assert not caught.value.retryable  # refused once, not retried


def test_a_loopback_server_gets_no_request_unless_its_host_is_allowed(server: FeedServer) -> None:
    data = image_bytes(7)
    url = server.add("/a.jpg", data, "image/jpeg")
    with (
        Downloader(fast_settings(allowed_private_hosts=[])) as client,
        pytest.raises(FetchError, match=r"^refused: port \d+ of 127\.0\.0\.1 is not 80 or 443"),
    ):
        client.image(url)
    assert server.hits("/a.jpg") == 0
    with Downloader(fast_settings(allowed_private_hosts=[server.host_port])) as client:
        assert client.image(url) == data


def test_an_allowed_host_port_does_not_open_the_same_host_on_another_port(
    server: FeedServer,
) -> None:
    with FeedServer() as private:
        secret = private.add("/secret.jpg", image_bytes(8), "image/jpeg")
        with (
            Downloader(fast_settings(allowed_private_hosts=[server.host_port])) as client,
            pytest.raises(FetchError, match=r"^refused: port"),
        ):
            client.image(secret)
        assert private.hits("/secret.jpg") == 0


def test_an_allowed_name_is_resolved_and_fetched(server: FeedServer) -> None:
    data = image_bytes(9)
    server.add("/named.jpg", data, "image/jpeg")
    allowed = [f"LOCALHOST:{server.port}"]  # entries match case-insensitively
    with Downloader(fast_settings(allowed_private_hosts=allowed)) as client:
        assert client.image(f"http://localhost:{server.port}/named.jpg") == data


def test_every_redirect_hop_is_checked(server: FeedServer) -> None:
    with FeedServer() as private:
        secret = private.add("/secret.jpg", image_bytes(10), "image/jpeg")
        hop = server.add("/hop.jpg", b"", None, status=302, headers={"Location": secret})
        moved = server.add("/moved.jpg", b"", None, status=301, headers={"Location": hop})
        meta = server.add(
            "/meta.jpg", b"", None, status=307, headers={"Location": "http://169.254.169.254/"}
        )
        with Downloader(fast_settings(allowed_private_hosts=[server.host_port])) as client:
            with pytest.raises(FetchError, match=r"^refused: port"):
                client.image(moved)
            with pytest.raises(FetchError, match=r"^refused: 169\.254\.169\.254 is a link-local"):
                client.image(meta)
        assert private.hits("/secret.jpg") == 0
        assert server.hits("/hop.jpg") == 1


def test_a_name_resolving_to_any_private_address_is_refused_and_global_ones_connect_as_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {
        "mixed.example": ["93.184.216.34", "10.0.0.5"],
        "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
    }

    def fake_getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(0, 0, 0, "", (address, port)) for address in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(Refused, match=r"mixed\.example resolves to 10\.0\.0\.5, a private address"):
        Policy([]).resolve("mixed.example", 443)
    assert Policy([]).resolve("public.example", 443) == answers["public.example"]
    assert Policy(["mixed.example"]).resolve("mixed.example", 8443) == answers["mixed.example"]
