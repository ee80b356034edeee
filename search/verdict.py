"""The copy verdict: is a picture in the catalog as the same file, as an edited copy, or not?

Layers run cheapest first and each says what it found:
1. SHA-256: the same bytes ("same file").
2. PDQ perceptual hash with its 8 dihedral variants, borders trimmed: Hamming distance at most
   `pdq_max_distance` (Meta's 31 of 256 bits) is a copy; flat pictures (low hash quality) skip it.
3. SSCD copy-detection descriptor, when its weights are present: cosine >= `sscd_min_score`.
4. Geometric verification of the nearest candidates of every descriptor (PDQ, SSCD, the
   weight-free layout vector, the ResNet50 vector): local features matched, a similarity
   transform fitted with RANSAC, and the query aligned onto the candidate and compared
   pixel by pixel (search/verify.py), which confirms crops, borders and rotations and rejects
   look-alikes and repetitive textures.
The verdict groups every catalog image found to be the picture (the exact file and each copy)
and lists every place any of them was published, earliest first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

import search.verify as verify
from config import VerdictSettings
from embed.decode import DecodedImage, DecodeError, decode_preview
from embed.descriptors import BY_NAME, COPY_LAYERS, IMAGE, CopyLayer, Descriptors
from ingest.sightings import places
from store.images import ImageStore, StoreError
from store.index import Hit, VectorIndex
from store.keys import point_id

log = logging.getLogger(__name__)
Kind = Literal["exact", "copy", "none"]
FEATURE_CACHE = 512  # catalog images whose local features stay in memory (~50 kB each)
# How strong each layer's evidence is: the same file, then the copy layers in registry order
# (cheapest and strongest first), then geometric verification.
STRENGTH = {
    "sha256": len(COPY_LAYERS) + 1,
    **{layer.name: len(COPY_LAYERS) - i for i, layer in enumerate(COPY_LAYERS)},
    "geometry": 0,
}


@dataclass(frozen=True)
class Evidence:
    """Why one catalog image is the query's picture: the layer, in words and in figures."""

    layer: str  # sha256 | a copy layer's name (pdq, sscd) | geometry
    text: str  # "same file", "edited copy: 14 of 256 hash bits differ", ...
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"layer": self.layer, "text": self.text, **self.figures}

    @property
    def rank(self) -> tuple[int, float]:
        """Stronger evidence sorts first (exact, then the copy layers, geometry)."""
        layer = BY_NAME.get(self.layer)
        if layer is not None and issubclass(layer, CopyLayer):
            return (STRENGTH[self.layer], layer.strength(self.figures))
        if self.layer == "geometry":
            return (STRENGTH["geometry"], float(self.figures.get("inliers", 0)))
        return (STRENGTH.get(self.layer, -1), 0.0)


@dataclass(frozen=True)
class Member:
    """A catalog image that is the query's picture, with the evidence."""

    id: str
    payload: dict[str, Any]
    evidence: Evidence

    @property
    def sha256(self) -> str:
        """The member's content hash."""
        return str(self.payload.get("sha256", ""))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, sha256, payload, evidence."""
        return {
            "id": self.id,
            "sha256": self.sha256,
            "payload": self.payload,
            "evidence": self.evidence.as_dict(),
        }


@dataclass(frozen=True)
class Verdict:
    """exact / copy / none, the group of catalog images that are the picture, and its timeline."""

    kind: Kind
    members: list[Member]  # strongest evidence first; empty for "none"
    timeline: list[dict[str, Any]]  # every place any member was published, earliest first
    layers: dict[str, str]  # what each layer did: "ran", or why it was skipped

    @property
    def original(self) -> Member | None:
        """The catalog image with the strongest evidence."""
        return self.members[0] if self.members else None

    @property
    def first_published(self) -> dict[str, Any] | None:
        """The earliest place in the timeline."""
        return self.timeline[0] if self.timeline else None

    def ids(self) -> set[str]:
        """Point ids of every member."""
        return {m.id for m in self.members}

    def evidence_dict(self) -> dict[str, Any]:
        """The evidence of the strongest member plus what every layer did."""
        best = self.original
        return {
            **(best.evidence.as_dict() if best else {"text": "no copy in the catalog"}),
            "layers": self.layers,
        }


class CopyDetector:
    """Runs the verdict's layers against the catalog; build once, call per query."""

    def __init__(
        self,
        index: VectorIndex,
        images: ImageStore,
        descriptors: Descriptors,
        settings: VerdictSettings,
    ) -> None:
        self.index = index
        self.images = images
        self.descriptors = descriptors
        self.settings = settings
        # Features of recently verified catalog images: popular pictures are asked about often.
        self._cache: dict[tuple[str, int, int], verify.Features] = {}
        self._cache_lock = threading.Lock()

    def check(
        self,
        query: DecodedImage,
        similar: Sequence[Hit] | Callable[[], Sequence[Hit]] = (),
        *,
        per_layer: dict[str, set[str]] | None = None,
    ) -> Verdict:
        """The verdict for a decoded query; `similar` are its ResNet50 neighbours if known
        (or a function that returns them, called once the cheaper layers are done).

        With `per_layer` (evaluation), every layer runs on every candidate and the ids each
        layer alone would call the picture are added to per_layer[layer].
        """
        found = _Findings(per_layer)
        layers: dict[str, str] = {}
        ranked: list[list[Hit]] = []  # candidates per layer, nearest first

        exact = self.index.get([point_id(query.sha256)])
        layers["sha256"] = "ran"
        for hit in exact:
            found.add(Member(hit.id, hit.payload, Evidence("sha256", "same file")))

        for layer in COPY_LAYERS:
            layers[layer.name] = self._copy_layer(layer, query.image, found, ranked)
        ranked.extend(self._proposals(query.image, similar))
        layers["geometry"] = self._geometry(query.image, found, ranked)

        members = sorted(found.members.values(), key=lambda m: m.evidence.rank, reverse=True)
        kind: Kind = "none"
        if members:
            kind = "exact" if members[0].evidence.layer == "sha256" else "copy"
        return Verdict(kind, members, timeline(members), layers)

    # -- layers -------------------------------------------------------------------------------
    def _copy_layer(
        self, kind: type[CopyLayer], image: Image.Image, found: _Findings, ranked: list[list[Hit]]
    ) -> str:
        """Search with a copy layer's query vectors; its rule says which neighbours are copies."""
        layer = self.descriptors.get(kind.name)
        if layer is None:
            return kind.off(self.settings)
        vectors = layer.query_vectors(image)
        if not vectors:
            return kind.skipped(self.settings)
        top_k = self.settings.candidates
        if len(vectors) == 1:
            nearest = self.index.query(vectors[0], using=kind.name, top_k=top_k)
        else:  # variants (PDQ: the 8 dihedral turns): each image at its best variant's score
            best: dict[str, Hit] = {}
            for hits in self.index.query_many(vectors, using=kind.name, top_k=top_k):
                for hit in hits:
                    if hit.id not in best or hit.score > best[hit.id].score:
                        best[hit.id] = hit
            nearest = sorted(best.values(), key=lambda h: -h.score)
        for hit in nearest:
            match = kind.match(hit.score, self.settings)
            if match is not None:
                evidence = Evidence(kind.name, match.text, match.figures)
                found.add(Member(hit.id, hit.payload, evidence))
        ranked.append(nearest)
        return "ran"

    def _proposals(
        self, image: Image.Image, similar: Sequence[Hit] | Callable[[], Sequence[Hit]]
    ) -> list[list[Hit]]:
        """Nearest catalog images of the descriptors that only propose candidates (the layout
        vector, then ResNet50's, which the caller may know already)."""
        top_k = self.settings.candidates
        out = []
        for d in self.descriptors:
            if d.proposes and d.name != IMAGE and not isinstance(d, CopyLayer):
                vectors = d.query_vectors(image)
                if vectors:
                    out.append(self.index.query(vectors[0], using=d.name, top_k=top_k))
        neighbours = similar() if callable(similar) else similar
        if neighbours:
            out.append(list(neighbours)[:top_k])
        elif IMAGE in self.descriptors:
            vectors = self.descriptors[IMAGE].query_vectors(image)
            out.append(self.index.query(vectors[0], using=IMAGE, top_k=top_k))
        return out

    def _geometry(self, image: Image.Image, found: _Findings, ranked: list[list[Hit]]) -> str:
        s = self.settings
        todo = [hit for hit in _interleave(ranked) if found.exhaustive or hit.id not in found]
        todo = todo[: s.candidates]
        if not todo:
            return "ran on 0 candidates"
        query = verify.extract(image, side=s.verify_side, n_features=s.verify_features)
        checked = 0
        for hit in todo:
            candidate = self._features(hit)
            if candidate is None:
                continue
            checked += 1
            result = verify.verify(
                query,
                candidate,
                min_inliers=s.verify_min_inliers,
                min_correlation=s.verify_min_correlation,
                min_overlap=s.verify_min_overlap,
            )
            if result.is_copy:
                text = f"edited copy: {result.inliers} matching points"
                found.add(Member(hit.id, hit.payload, Evidence("geometry", text, result.as_dict())))
        return f"ran on {checked} candidate(s)"

    def _features(self, hit: Hit) -> verify.Features | None:
        """Local features of a catalog image, from its original decoded at verification size."""
        key = hit.payload.get("image_key")
        if not key:
            return None
        cache_key = (str(key), self.settings.verify_side, self.settings.verify_features)
        with self._cache_lock:
            cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        try:
            data = self.images.get(str(key))
            preview = decode_preview(data, self.settings.verify_side)
        except (StoreError, DecodeError) as exc:
            log.warning("cannot verify against %s: %s", hit.id, exc)
            return None
        features = verify.extract(
            preview,
            side=self.settings.verify_side,
            n_features=self.settings.verify_features,
            mirror=False,  # the query is tried mirrored; the candidate stays as published
        )
        with self._cache_lock:
            self._cache[cache_key] = features
            while len(self._cache) > FEATURE_CACHE:
                self._cache.pop(next(iter(self._cache)))
        return features


class _Findings:
    """Members found so far (first evidence wins), and per layer when evaluating."""

    def __init__(self, per_layer: dict[str, set[str]] | None) -> None:
        self.members: dict[str, Member] = {}
        self.per_layer = per_layer

    @property
    def exhaustive(self) -> bool:
        """Evaluation: every layer checks every candidate."""
        return self.per_layer is not None

    def __contains__(self, point: object) -> bool:
        return point in self.members

    def add(self, member: Member) -> None:
        """Record a member (keeping earlier, cheaper evidence) and the layer that found it."""
        if self.per_layer is not None:
            self.per_layer.setdefault(member.evidence.layer, set()).add(member.id)
        self.members.setdefault(member.id, member)


def _interleave(ranked: Sequence[Sequence[Hit]]) -> Iterator[Hit]:
    """Candidates of every layer in turn (1st of each, then 2nd of each...), each id once."""
    seen: set[str] = set()
    depth = max((len(r) for r in ranked), default=0)
    for i in range(depth):
        for hits in ranked:
            if i < len(hits) and hits[i].id not in seen:
                seen.add(hits[i].id)
                yield hits[i]


def timeline(members: Sequence[Member]) -> list[dict[str, Any]]:
    """Every place any member was published, earliest first (undated places last)."""
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for member in members:
        for place in places(member.payload):
            key = (member.sha256, str(place.get("source_uri", "")))
            if key in seen:
                continue
            seen.add(key)
            entries.append({**place, "sha256": member.sha256, "id": member.id})
    return sorted(entries, key=_when)


def _when(place: dict[str, Any]) -> tuple[int, str]:
    date = place.get("published_at") or place.get("first_seen")
    return (0, str(date)) if date else (1, "")
