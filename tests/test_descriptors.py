"""Every registered descriptor through the same checks, on real photographs.

Models are seeded random weights (ResNet50, a tiny SSCD-shaped TorchScript, a tiny CLIP): the
checks are about shapes, types, the registry and that a copy rule holds for an image and its
re-saved copy; no threshold is tuned here.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embed.descriptors as registry
from config import Settings, VerdictSettings
from embed.decode import Fit
from embed.descriptors import (
    BY_NAME,
    COPY_LAYERS,
    REGISTRY,
    CopyLayer,
    Descriptor,
    build_descriptors,
    needed_fit,
    specs,
)
from embed.encoder import Encoder
from embed.model import Model
from store.index import VectorSpec
from tests.conftest import make_settings, photo

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
UNRELATED = "hubble_deep_field"
NAMES = [kind.name for kind in REGISTRY]

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def resaved(image: Image.Image) -> Image.Image:
    """The photo as a re-encoded, slightly smaller JPEG: what a re-upload does to it."""
    small = image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Text search on (so CLIP is declared), on a tiny CLIP built once for this module."""
    from tests.test_clip import save_tiny_clip

    root = tmp_path_factory.mktemp("descriptors")
    clip_folder = save_tiny_clip(root / "tiny-clip")
    return make_settings(root / "data", text={"enabled": True, "model": str(clip_folder)})


@pytest.fixture(scope="module")
def models(
    settings: Settings, encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Model]:
    """A seeded random-weight model for every descriptor that needs one."""
    from embed.clip import ClipEncoder, resolve_model
    from embed.sscd import SSCD_FILE, SscdEncoder
    from tests.test_sscd import TinySscd, save_scripted

    sscd_file = save_scripted(TinySscd(), tmp_path_factory.mktemp("sscd") / SSCD_FILE)
    return {
        registry.IMAGE: encoder,
        registry.SSCD: SscdEncoder(sscd_file),
        registry.CLIP: ClipEncoder(resolve_model(settings.text.model), batch_size=4),
    }


@pytest.fixture(scope="module")
def built(settings: Settings, models: dict[str, Model]) -> dict[str, Descriptor]:
    """Every registered descriptor, built on its model."""
    out = {}
    for kind in REGISTRY:
        descriptor = kind.build(settings, models.get(kind.name))
        assert descriptor is not None, f"{kind.name}: give it a model in the `models` fixture"
        out[kind.name] = descriptor
    return out


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [photo(name) for name in PHOTOS]


def spec_of(settings: Settings, name: str) -> VectorSpec:
    (spec,) = [s for s in specs(settings) if s.name == name]
    return spec


def check_vectors(spec: VectorSpec, vectors: np.ndarray, rows: int) -> None:
    assert vectors.shape == (rows, spec.size)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    if spec.binary:
        assert set(np.unique(vectors)) <= {-1.0, 1.0}
    if spec.distance == "cosine":
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


# --- the registry ------------------------------------------------------------------------------


def test_names_are_unique_and_every_one_is_importable_by_its_constant() -> None:
    assert len(set(NAMES)) == len(NAMES) == len(BY_NAME)
    constants = {registry.IMAGE, registry.PDQ, registry.SSCD, registry.LAYOUT, registry.CLIP}
    assert constants == set(NAMES)
    assert [kind.name for kind in COPY_LAYERS] == [registry.PDQ, registry.SSCD]


def test_the_catalog_s_vectors_are_as_they_were() -> None:
    """Names, sizes, distances and search settings are part of the catalog format."""
    declared = {s.name: s for s in specs(make_settings(Path("unused")))}
    assert list(declared) == ["image", "pdq", "sscd", "layout"]  # clip only with text search
    assert declared["image"] == VectorSpec("image", 2048, "cosine")
    assert declared["pdq"] == VectorSpec("pdq", 256, "dot", binary=True, search_ef=512)
    assert declared["sscd"] == VectorSpec("sscd", 512, "cosine")
    assert declared["layout"] == VectorSpec("layout", 320, "cosine")


def test_the_decoder_gets_the_largest_need_of_every_descriptor() -> None:
    fit = needed_fit(long=300)
    assert fit.short == max(kind.pixels.short for kind in REGISTRY) == 288
    assert fit.long == 512  # PDQ's hashing side
    assert needed_fit(long=1024).long == 1024


def test_the_labels_recorded_in_the_catalog_are_as_they_were(
    settings: Settings, built: dict[str, Descriptor]
) -> None:
    assert built["image"].label == "ResNet50 random (seeded)"
    assert built["pdq"].label == "PDQ (pdqhash, borders trimmed)"
    assert built["layout"].label == "layout v1 (HSV histogram, gradient grid, 8x8 thumbnail)"
    assert built["sscd"].label.startswith("sscd_disc_mixup.torchscript.pt sha256:")
    assert built["clip"].label.startswith("CLIP ViT patch8 512-d sha256:")


def test_without_models_only_the_weight_free_descriptors_are_built(
    settings: Settings, encoder: Encoder
) -> None:
    descriptors = build_descriptors(settings, encoder)
    assert [d.name for d in descriptors] == ["image", "pdq", "layout"]
    assert [s.name for s in descriptors.declared] == NAMES  # declared all the same


def test_embed_has_no_import_cycle() -> None:
    """Counting imports inside functions: each module of embed/ imports only ones below it."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / "embed").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
        return seen

    assert graph["embed.descriptors"]  # the graph was read
    assert sorted(name for name in graph if name in reachable(name)) == []


# --- every descriptor, the same checks ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_its_vectors_fit_its_spec(
    name: str, settings: Settings, built: dict[str, Descriptor], photos: list[Image.Image]
) -> None:
    descriptor = built[name]
    spec = spec_of(settings, name)
    assert descriptor.label.strip()
    assert descriptor.pixels.short >= 0 and descriptor.pixels.long >= 0
    prepared = [descriptor.prepare(image) for image in photos]
    assert all(value is not None for value in prepared)
    vectors = descriptor.compute(prepared)
    check_vectors(spec, vectors, len(photos))
    # A batch gives each image the vector it gets alone.
    alone = descriptor.compute([prepared[1]])
    np.testing.assert_allclose(alone[0], vectors[1], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_its_query_vectors_fit_its_spec(
    name: str, settings: Settings, built: dict[str, Descriptor], photos: list[Image.Image]
) -> None:
    descriptor = built[name]
    queries = descriptor.query_vectors(photos[0])
    assert queries, "a photo always has query vectors"
    check_vectors(spec_of(settings, name), np.stack(queries), len(queries))
    if name == registry.PDQ:
        assert len(queries) == 8  # the dihedral variants
        stored = descriptor.compute([descriptor.prepare(photos[0])])[0]
        np.testing.assert_array_equal(queries[0], stored)


def best_score(descriptor: Descriptor, query: Image.Image, stored: Image.Image) -> float:
    """The index's score of `stored` for `query` (both are unit or +1/-1: a dot product)."""
    catalog = descriptor.compute([descriptor.prepare(stored)])[0]
    return max(float(np.dot(vector, catalog)) for vector in descriptor.query_vectors(query))


@pytest.mark.parametrize("name", [kind.name for kind in COPY_LAYERS])
def test_its_copy_rule_matches_the_photo_and_a_resaved_copy(
    name: str, built: dict[str, Descriptor], photos: list[Image.Image]
) -> None:
    layer = built[name]
    assert isinstance(layer, CopyLayer)
    rules = VerdictSettings()
    for original in photos:
        for query in (original, resaved(original)):
            match = layer.match(best_score(layer, query, original), rules)
            assert match is not None, f"{name}: a copy of {PHOTOS[photos.index(original)]}"
            assert match.text.startswith("edited copy: ")
            assert layer.strength(match.figures) <= layer.strength(
                layer.match(best_score(layer, original, original), rules).figures  # type: ignore[union-attr]
            )


def test_the_hash_rule_rejects_an_unrelated_photo(
    built: dict[str, Descriptor], photos: list[Image.Image]
) -> None:
    """PDQ needs no weights, so its rule is checked on unrelated photos too (SSCD's rejection
    would need its real weights: random ones say nothing about that threshold)."""
    layer = built[registry.PDQ]
    assert isinstance(layer, CopyLayer)
    unrelated = photo(UNRELATED)
    for original in photos:
        assert layer.match(best_score(layer, unrelated, original), VerdictSettings()) is None


@pytest.mark.parametrize("kind", COPY_LAYERS, ids=lambda kind: kind.name)
def test_a_copy_layer_says_why_it_does_not_run(kind: type[CopyLayer]) -> None:
    for text in (kind.off(VerdictSettings()), kind.skipped(VerdictSettings())):
        assert text.strip() and "\n" not in text


def test_a_new_descriptor_needs_only_its_class_and_a_registry_entry(
    monkeypatch: pytest.MonkeyPatch, encoder: Encoder
) -> None:
    class Brightness(Descriptor):
        name = "brightness"
        pixels = Fit(short=0, long=64)
        proposes = False

        @classmethod
        def spec(cls, settings: Settings) -> VectorSpec:
            return VectorSpec(cls.name, 1, "euclid")

        @property
        def label(self) -> str:
            return "mean luma v1"

        def prepare(self, image: Image.Image) -> np.ndarray:
            return np.array([np.asarray(image.convert("L")).mean() / 255], dtype=np.float32)

    monkeypatch.setattr(registry, "REGISTRY", (*REGISTRY, Brightness))
    settings = make_settings(Path("unused"))
    assert specs(settings)[-1] == VectorSpec("brightness", 1, "euclid")
    descriptors = build_descriptors(settings, encoder)
    assert descriptors.labels["brightness"] == "mean luma v1"
    vectors = descriptors.compute([descriptors.prepare(photo("coffee"))])[0]
    assert vectors["brightness"].shape == (1,)


def test_every_descriptor_module_is_registered() -> None:
    registered = {kind.__module__ for kind in REGISTRY}
    on_disk = {
        f"embed.descriptors.{path.stem}"
        for path in (ROOT / "embed" / "descriptors").glob("*_descriptor.py")
    }
    assert on_disk == registered
