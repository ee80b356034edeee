"""Run a torch vision model on the CPU through ONNX Runtime.

On CPUs without native bf16 the same fp32 ResNet50 runs about 1.5x faster in ONNX Runtime (MLAS
kernels, fused graph) than in eager torch with channels_last: 18.1 vs 12.0 images/s at batch 16 and
62 vs 94 ms for one image on a quiet 2-core AVX2 machine, with outputs equal to 1e-5; an SSCD-shaped
model (ResNet50 trunk, GeM, 288x384 inputs) 8.2 vs 3.9 images/s. The model is
exported in memory when it loads (about 1 s) and nothing is written to disk. ONNX Runtime sends no
telemetry on Linux. Before it is used, the compiled model must give torch's own output on every
probe input (two sizes for models that take any size), so an export that traced a shape or a
branch as a constant is refused and the caller stays in torch.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

INPUT = "pixels"
OUTPUT = "features"
OPSET = 17
# Agreement required with torch on the probes: fp32 kernels differ in summation order only.
RTOL = 1e-3
ATOL = 1e-4


class OnnxUnavailable(RuntimeError):
    """The model could not be exported or loaded into ONNX Runtime (the caller falls back)."""


class OnnxModel:
    """An fp32 model compiled by ONNX Runtime; call it with an (n, 3, h, w) float32 batch.

    `probes` are example inputs: the first is the one exported with; with `any_size` the height
    and width stay free (give probes of two sizes), else only the batch size is.
    """

    def __init__(
        self,
        model: nn.Module,
        probes: Sequence[torch.Tensor],
        *,
        threads: int,
        any_size: bool = False,
    ) -> None:
        try:
            import onnxruntime as ort

            graph = export(model, probes[0], any_size=any_size)
            self._session = cpu_session(graph, threads)
            for probe in probes:
                with torch.no_grad():
                    expected = model(probe).float().numpy()
                got = self(probe.numpy())
                if got.shape != expected.shape or not np.allclose(
                    got, expected, rtol=RTOL, atol=ATOL
                ):
                    raise OnnxUnavailable(
                        f"the exported model differs from torch on a {tuple(probe.shape)} input"
                    )
        except OnnxUnavailable:
            raise
        except Exception as exc:  # export and runtime raise many types; the caller falls back
            raise OnnxUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self.version = ort.__version__
        self.graph = graph  # the fp32 ONNX graph, which the int8 model is quantized from
        self.threads = threads

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a float32 batch (thread-safe)."""
        outputs = self._session.run([OUTPUT], {INPUT: np.ascontiguousarray(batch, np.float32)})
        result: np.ndarray = outputs[0]
        return result


def cpu_session(graph: bytes, threads: int) -> Any:
    """An ONNX Runtime session on its CPU kernels for a serialized graph (fp32 or int8)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 = ONNX Runtime's own choice
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; it logs through Python's stderr
    # Idle threads sleep instead of spinning: the decode workers and the query's hash
    # layers need those cores (measured: ingest 11.8 vs 10.3 images/s, search p50 202
    # vs 287 ms; the model alone loses 8%).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def compile_or_none(
    model: nn.Module,
    probes: Sequence[torch.Tensor],
    *,
    threads: int,
    what: str,
    any_size: bool = False,
) -> OnnxModel | None:
    """`model` in ONNX Runtime, or None when it cannot run there (said once in the log): the
    caller then runs it in torch, with the same vectors, only slower."""
    try:
        return OnnxModel(model, probes, threads=threads, any_size=any_size)
    except OnnxUnavailable as exc:
        log.warning("ONNX Runtime could not load %s (%s); running it in torch", what, exc)
        return None


def export(model: nn.Module, example: torch.Tensor, *, any_size: bool = False) -> bytes:
    """The model as an ONNX graph with a free batch size (and height and width with
    `any_size`), exported in memory."""
    free = {0: "batch", 2: "height", 3: "width"} if any_size else {0: "batch"}
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript; it still exports torchvision's convolutional models exactly.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: free, OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return buffer.getvalue()
