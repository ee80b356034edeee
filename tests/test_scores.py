"""The threshold control follows the metric: a minimum similarity or a maximum distance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from search.scores import score_scale

UI = str(Path(__file__).resolve().parents[1] / "app" / "ui.py")


@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_similarities_take_a_minimum_in_0_1(distance: str) -> None:
    scale = score_scale(distance, 2048)
    assert scale.higher_is_better and scale.label == "Minimum similarity"
    assert (scale.low, scale.high) == (0.0, 1.0)
    assert scale.keeps(0.8, 0.5) and not scale.keeps(0.2, 0.5)


def test_distances_take_a_maximum_over_the_range_of_unit_vectors() -> None:
    euclid = score_scale("euclid", 2048)
    assert not euclid.higher_is_better and euclid.label == "Maximum distance"
    assert (euclid.low, euclid.high) == (0.0, 2.0)  # |a - b| <= 2 for unit vectors
    assert euclid.keeps(0.3, 1.0) and not euclid.keeps(1.5, 1.0)
    manhattan = score_scale("manhattan", 2048)
    assert manhattan.high == pytest.approx(2 * math.sqrt(2048), abs=0.1)
    assert manhattan.low < manhattan.default < manhattan.high
    # The same point of each scale: cosine 0.5 is Euclidean sqrt(2 - 2 * 0.5) = 1.
    assert euclid.default == pytest.approx(math.sqrt(2 - 2 * score_scale("cosine", 8).default))


def test_an_unknown_distance_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown distance"):
        score_scale("hamming", 8)


def test_the_page_offers_a_maximum_distance_for_a_euclidean_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMGSEARCH_EMBED__WEIGHTS", "random")
    monkeypatch.setenv("IMGSEARCH_EMBED__DEVICE", "cpu")
    monkeypatch.setenv("IMGSEARCH_QDRANT__DISTANCE", "euclid")
    at = AppTest.from_file(UI, default_timeout=120).run()
    assert not at.exception
    [toggle] = [c for c in at.checkbox if "distances below a maximum" in c.label]
    toggle.check().run()
    [slider] = [s for s in at.slider if s.label == "Maximum distance"]
    assert (slider.min, slider.max, slider.value) == (0.0, 2.0, 1.0)
    assert not [s for s in at.slider if "similarity" in s.label]
