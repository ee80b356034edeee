"""int8 networks on the CPU: static QDQ quantization in ONNX Runtime, checked before use.

The fp32 graph that embed/onnx.py exported when the model loaded is quantized statically
(QDQ, per-channel int8 weights, uint8 activations; ranges from MinMax calibration) on photos
that ship with the package (embed/probes/, never the user's catalog), and cached on disk keyed
by that graph's SHA-256 (weights and graph), the ONNX Runtime version and the recipe, so only
the first load of given weights pays for it (about 10 s for ResNet50 on 2 cores).

Layout: U8S8 (uint8 activations, int8 weights), the layout ONNX Runtime's x86 kernels are fast
in (measured on a 2-core AVX-512 VNNI EPYC, ResNet50 batch 16: U8S8 25 images/s, S8S8 9,
fp32 7, all under the same load). Without VNNI (AVX2, AVX-512F) its kernels multiply uint8 by
int8 with `vpmaddubsw`, whose 16-bit sums can saturate: there the weights use 7 bits
(`reduce_range`), as ONNX Runtime's quantization guide advises; with VNNI (`vpdpbusd` sums in
32 bits) the full 8 bits are kept. The final pooling stays fp32, so the vector itself is not
rounded to 256 levels.

Before it is used, the int8 model must agree with the fp32 model of the same weights on the
probe photos, which are apart from the calibration photos (see `SelfCheck`): a user's own
weights are checked on their machine, and weights that int8 ruins (outlier channels) stay fp32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from embed.onnx import INPUT, OUTPUT, OnnxModel, cpu_session

log = logging.getLogger(__name__)

PROBES = Path(__file__).resolve().parent / "probes"
# The self-check's bars. Mean cosine of int8 against fp32 vectors of the same photo (the
# `int8_agreement` of `imgsearch bench`): published int8 ResNet50s lose 0.1-0.3 points of top-1
# at cosines well above this, and a model that int8 ruined falls far below it.
AGREEMENT_BAR = 0.99
# A probe's nearest neighbour (among the other probes) may change only to one that fp32 itself
# ranks as close, within this share of the probe's range of fp32 similarities: the neighbours
# that fp32 cannot tell apart may swap (random weights map every photo near one direction,
# where neighbours are nearly ties), a neighbour fp32 ranks far away may not.
NEIGHBOUR_SLACK = 0.1
# CPU flags of integer dot products that sum in 32 bits (no 16-bit saturation).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# What the cached graph depends on beside the fp32 graph and ONNX Runtime: bump on any change
# of the recipe below or of the calibration photos.
RECIPE = "qdq-u8s8-per-channel-minmax-1"
CALIBRATION_BATCH = 4
# Ops quantized: the convolutions and residual adds carry the work; pooling and the head stay
# fp32, so the output vector keeps its precision.
QUANTIZED_OPS = ("Conv", "Add", "MaxPool")


class Int8Unavailable(RuntimeError):
    """Quantization failed or the int8 model failed its self-check (the caller runs fp32);
    `check` holds the self-check's figures when it ran."""

    def __init__(self, message: str, check: SelfCheck | None = None) -> None:
        super().__init__(message)
        self.check = check


def shipped_photos(kind: str) -> list[Image.Image]:
    """The package's photos of one kind, "calibration" or "probe", sorted by name, RGB."""
    paths = sorted(PROBES.glob(f"{kind}-*.jpg"))
    if not paths:
        raise Int8Unavailable(f"no {kind} photos in {PROBES} (a broken install?)")
    photos = []
    for path in paths:
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    return photos


def wants_reduce_range(flags: frozenset[str]) -> bool:
    """Whether int8 weights should use 7 bits on this CPU: where there is no VNNI."""
    return not VNNI_FLAGS & flags


@dataclass(frozen=True)
class SelfCheck:
    """How the int8 model's vectors compare with fp32's on the probe photos."""

    agreement: float  # mean cosine of each probe's int8 vector with its fp32 vector
    neighbours: float  # share of probes whose nearest neighbour stays (within the slack)
    probes: int

    @property
    def passed(self) -> bool:
        """Both bars met: the mean cosine, and every probe's nearest neighbour kept."""
        return self.agreement >= AGREEMENT_BAR and self.neighbours >= 1.0

    def describe(self) -> str:
        """E.g. "mean cosine 0.9991 against fp32, nearest neighbour kept for 12 of 12 probes"."""
        kept = round(self.neighbours * self.probes)
        return (
            f"mean cosine {self.agreement:.4f} against fp32 (bar {AGREEMENT_BAR}), nearest "
            f"neighbour kept for {kept} of {self.probes} probe photos"
        )


def self_check(fp32: np.ndarray, int8: np.ndarray) -> SelfCheck:
    """Compare int8 with fp32 vectors of the same probes (rows in the same order)."""
    reference, quantized = _unit(fp32), _unit(int8)
    agreement = float(np.mean(np.sum(reference * quantized, axis=1)))
    # Neighbours after removing each model's common direction (the mean of its probe vectors),
    # where random weights' vectors, all within ~0.999 of each other, still differ, and where
    # a shift that int8 gives every vector alike does not count.
    ref = _unit(reference - reference.mean(axis=0))
    got = _unit(quantized - quantized.mean(axis=0))
    n = len(ref)
    ref_sim, got_sim = ref @ ref.T, got @ got.T
    np.fill_diagonal(ref_sim, -np.inf)
    np.fill_diagonal(got_sim, -np.inf)
    kept = 0
    for i in range(n):
        others = np.delete(ref_sim[i], i)
        best = float(others.max())
        slack = NEIGHBOUR_SLACK * (best - float(others.min()))
        kept += ref_sim[i, int(np.argmax(got_sim[i]))] >= best - slack
    return SelfCheck(agreement=agreement, neighbours=float(kept / n) if n else 0.0, probes=n)


def cache_dir() -> Path:
    """Where quantized graphs are kept: beside the model files, in the torch hub cache."""
    return Path(torch.hub.get_dir()) / "imgsearch-int8"


def quantized_graph(
    fp32_graph: bytes,
    calibration: Callable[[], Sequence[np.ndarray]],
    *,
    reduce_range: bool,
    directory: Path | None = None,
) -> bytes:
    """The int8 graph of `fp32_graph`, from the disk cache or quantized now (and cached).

    `calibration` gives the calibration inputs (called only on a cache miss).
    """
    import onnxruntime as ort

    key = hashlib.sha256(fp32_graph)
    key.update(f"|{ort.__version__}|{RECIPE}|reduce_range={reduce_range}".encode())
    folder = directory or cache_dir()
    path = folder / f"{key.hexdigest()[:32]}.onnx"
    try:
        return path.read_bytes()
    except OSError:
        pass
    graph = quantize(fp32_graph, calibration(), reduce_range=reduce_range)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as part:
            part.write(graph)
        os.replace(part.name, path)  # atomic: a reader never sees half a file
    except OSError as exc:  # a read-only cache costs the next load the quantization again
        log.warning("could not cache the int8 graph in %s (%s)", folder, exc)
    return graph


def quantize(fp32_graph: bytes, calibration: Sequence[np.ndarray], *, reduce_range: bool) -> bytes:
    """Static QDQ quantization of an fp32 graph, calibrated on `calibration` (n, 3, h, w)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = [
                np.ascontiguousarray(np.stack(calibration[i : i + CALIBRATION_BATCH]), np.float32)
                for i in range(0, len(calibration), CALIBRATION_BATCH)
            ]
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory(prefix="imgsearch-int8-") as tmp:
        raw, prepared, out = (Path(tmp) / name for name in ("raw.onnx", "pre.onnx", "q.onnx"))
        raw.write_bytes(fp32_graph)
        # Shape inference and graph optimisation first (folds the exporter's Identity nodes,
        # which would otherwise leave biases unquantized and the graph 3x slower).
        # The quantizer gives its advice through the root logger and the shape inference says
        # what it does at INFO: neither is for the user.
        quiet = _QuietQuantizer()
        root, inference = logging.getLogger(), logging.getLogger(quant_pre_process.__module__)
        root.addFilter(quiet)
        inference.addFilter(quiet)
        try:
            quant_pre_process(str(raw), str(prepared))
            quantize_static(
                str(prepared),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            root.removeFilter(quiet)
            inference.removeFilter(quiet)
        return out.read_bytes()


class _QuietQuantizer(logging.Filter):
    """Drops the records ONNX Runtime's quantization package logs below ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        inside = f"onnxruntime{os.sep}quantization" in record.pathname
        return not inside or record.levelno >= logging.ERROR


class Int8Model:
    """An int8 graph in ONNX Runtime, called like OnnxModel: (n, 3, h, w) float32 -> features."""

    def __init__(self, graph: bytes, threads: int, check: SelfCheck) -> None:
        self._session = cpu_session(graph, threads)
        self.check = check

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a float32 batch (thread-safe)."""
        outputs = self._session.run([OUTPUT], {INPUT: np.ascontiguousarray(batch, np.float32)})
        result: np.ndarray = outputs[0]
        return result


def compile_int8(
    fp32: OnnxModel,
    preprocess: Callable[[Image.Image], torch.Tensor],
    *,
    flags: frozenset[str],
    what: str,
    directory: Path | None = None,
) -> Int8Model:
    """The int8 model of `fp32`'s graph once it passed the self-check on the probe photos.

    Raises Int8Unavailable (with the check's figures) when it fails or cannot be built.
    """

    def inputs(kind: str) -> list[np.ndarray]:
        return [preprocess(photo).numpy() for photo in shipped_photos(kind)]

    try:
        graph = quantized_graph(
            fp32.graph,
            lambda: inputs("calibration"),
            reduce_range=wants_reduce_range(flags),
            directory=directory,
        )
        candidate = Int8Model(graph, fp32.threads, SelfCheck(0.0, 0.0, 0))
        probes = np.stack(inputs("probe"))  # one size: the probe photos are all 384x288
        reference, quantized = fp32(probes), candidate(probes)
    except Int8Unavailable:
        raise
    except Exception as exc:  # the quantizer and the runtime raise many types
        raise Int8Unavailable(
            f"{what} could not be quantized ({type(exc).__name__}: {exc})"
        ) from exc
    check = self_check(reference, quantized)
    if not check.passed:
        raise Int8Unavailable(f"{what} in int8 failed its self-check: {check.describe()}", check)
    candidate.check = check
    return candidate


def _unit(rows: Any) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)
