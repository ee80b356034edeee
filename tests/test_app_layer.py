"""The application layer the page, the API and the CLI share: queries, errors, verdict text."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import KNOWN, OUTCOMES, describe, outcome
from app.present import skipped_layers, title_of, verdict_line, verdict_text
from embed.decode import DecodeError
from ingest.pipeline import RunInProgress
from search.query import (
    MAX_EXAMPLES,
    Examples,
    FetchFailed,
    QueryError,
    UnknownImage,
    build_query,
    classify,
)
from search.service import NO_VERDICT, SearchResult
from search.verdict import Evidence, Member, Verdict
from store.images import StoreError
from store.index import IndexLocked, Strategy

ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def test_examples_are_told_apart_by_one_rule(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"jpeg bytes")
    sent = classify([b"upload", "https://example.org/a.jpg", f" {ID} ", "not-an-id", ""])
    assert sent == Examples((b"upload",), ("https://example.org/a.jpg",), (ID, "not-an-id"))
    # The command line reads files: an existing path, or anything that is not an id.
    given = classify([str(photo), ID, "HTTP://x.org/b.png"], read_file=read)
    assert given == Examples((b"jpeg bytes",), ("HTTP://x.org/b.png",), (ID,))
    with pytest.raises(OSError):
        classify(["no-such-file.jpg"], read_file=read)


def test_a_query_is_checked_where_it_is_built() -> None:
    query = build_query(positive=Examples(ids=(ID,)), top_k=5, strategy="best_score")
    assert query.strategy is Strategy.BEST_SCORE and query.ids == (ID,)
    assert build_query(positive=Examples(ids=(ID,)), top_k=5, threshold="0.5").threshold == 0.5
    bad = [
        ({"top_k": 5}, "at least one example"),
        ({"positive": Examples(ids=(ID,)), "top_k": 5, "strategy": "fastest"}, "strategy"),
        ({"positive": Examples(ids=(ID,)), "top_k": 5, "threshold": "high"}, "threshold"),
        ({"positive": Examples(ids=(ID,)), "top_k": 0}, "top_k"),
        ({"positive": Examples(ids=("nope",)), "top_k": 5}, "not an image id"),
        ({"positive": Examples(urls=("https://a/b.jpg",)), "text": "cat", "top_k": 5}, "text"),
        ({"positive": Examples(ids=(ID,) * (MAX_EXAMPLES + 1)), "top_k": 5}, "at most"),
    ]
    for inputs, words in bad:
        with pytest.raises(QueryError, match=words):
            build_query(**inputs)  # type: ignore[arg-type]
    # As many negatives as positives are allowed.
    both = Examples(ids=(ID,) * MAX_EXAMPLES)
    assert build_query(positive=both, negative=both, top_k=5).negatives == MAX_EXAMPLES


def test_every_error_a_person_meets_has_one_status_and_one_sentence() -> None:
    cases = {
        DecodeError("not an image"): (400, "That file is not a usable image: not an image."),
        UnknownImage(f"No image with id {ID} is in the catalog."): (404, None),
        FetchFailed("The image at x could not be fetched: refused."): (400, None),
        QueryError("strategy must be one of a, b."): (422, "Strategy must be one of a, b."),
        RunInProgress("a run is already in progress"): (409, "A run is already in progress."),
        IndexLocked("The embedded index is held by process 7"): (503, None),
        StoreError("the bucket is unreachable"): (503, "The bucket is unreachable."),
    }
    for exc, (status, words) in cases.items():
        row = outcome(exc)
        assert row is not None and row.status == status, exc
        assert row.exit_code == 2
        text = describe(exc)
        assert text[0].isupper() and text.endswith("."), text
        if words:
            assert text == words
    assert outcome(KeyError("x")) is None and not isinstance(KeyError("x"), KNOWN)
    assert describe(KeyError("x")) == "Something went wrong; the log has the details."
    # A subclass is found before its base (UnknownImage is a QueryError, but a 404).
    kinds = [kind for row in OUTCOMES for kind in row.kinds]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind


def result_with(verdict: Verdict) -> SearchResult:
    return SearchResult("ab" * 32, 640, 480, None, [], verdict)


def test_the_verdict_reads_the_same_wherever_it_is_shown() -> None:
    assert verdict_line(NO_VERDICT).startswith("Not in the catalog")
    first = {
        "published_at": "2024-01-10T08:00:00Z",
        "source": "wire",
        "title": "Flood in the harbour",
        "source_uri": "https://news.example/flood",
    }
    member = Member(ID, {"sha256": "cd" * 32, **first}, Evidence("pdq", "edited copy: 9 bits"))
    copy = Verdict(
        "copy", [member], [first], {"sha256": "ran", "pdq": "ran", "sscd": "off: no model"}
    )
    line = verdict_line(copy)
    assert line == (
        "Published before: an edited copy is in the catalog (edited copy: 9 bits). First "
        "published 2024-01-10T08:00:00Z by wire: Flood in the harbour <https://news.example/flood>."
    )
    assert skipped_layers(copy) == {"sscd": "off: no model"}
    lines = verdict_text("q.jpg", result_with(copy))
    assert lines[0] == f"q.jpg: {line}"
    assert "    (sscd off: no model)" in lines
    assert title_of({"source_uri": "https://a.example/x/photo.jpg"}) == "photo.jpg"
