"""Encoder: 2048-d unit vectors, deterministic, batch-invariant, loads weight files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet50

from config import EmbedSettings
from embed.encoder import (
    DIM,
    Encoder,
    WeightsUnavailable,
    auto_threads,
    cpu_flags,
    load_encoder,
    plan_for,
)
from tests.conftest import draw_image, photo


def test_embeddings_are_2048_d_unit_float32(encoder: Encoder) -> None:
    vectors = encoder.embed([draw_image(i) for i in range(3)])
    assert vectors.shape == (3, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_random_weights_are_deterministic_across_builds(encoder: Encoder) -> None:
    again = Encoder(EmbedSettings(weights="random", batch_size=8, device="cpu", precision="fp32"))
    image = draw_image(7)
    np.testing.assert_allclose(encoder.embed([image]), again.embed([image]), atol=1e-5)
    assert again.is_random


def test_batch_equals_one_by_one(encoder: Encoder) -> None:
    images = [draw_image(i, (100 + 10 * i, 90)) for i in range(10)]  # > batch_size of 8
    together = encoder.embed(images)
    alone = np.concatenate([encoder.embed([image]) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_different_images_get_different_vectors(encoder: Encoder) -> None:
    a, b = encoder.embed([draw_image(1), draw_image(2)])
    assert not np.allclose(a, b)


def test_weights_load_from_a_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    model = resnet50(weights=None).eval()
    path = tmp_path / "weights.pth"
    # Saved the way training code often does: wrapped, with a module. prefix and the classifier.
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    encoder = Encoder(EmbedSettings(weights=str(path), device="cpu", precision="fp32"))
    assert not encoder.is_random
    image = draw_image(3)
    model.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = model(encoder.preprocess(image).unsqueeze(0))
    expected = torch.nn.functional.normalize(expected, dim=1).numpy()
    np.testing.assert_allclose(encoder.embed([image]), expected, atol=1e-4)


def test_a_state_dict_that_does_not_fit_resnet50_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsUnavailable, match="does not fit ResNet50"):
        Encoder(EmbedSettings(weights=str(path), device="cpu"))


def test_a_missing_weights_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="IMGSEARCH_EMBED__WEIGHTS"):
        Encoder(EmbedSettings(weights=str(tmp_path / "nope.pth"), device="cpu"))


def test_imagenet_without_network_fails_fast_naming_file_cache_and_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty torch cache and no network (as on these machines): the download cannot happen.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(WeightsUnavailable) as caught:
        Encoder(EmbedSettings(weights="imagenet", device="cpu"))
    message = str(caught.value)
    assert "resnet50-11ad3fa6.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "IMGSEARCH_EMBED__WEIGHTS=/path/to/file.pth" in message


# -- how the encoder runs: device, precision, threads ---------------------------------------

BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})
AMX_CPU = frozenset({"avx2", "amx_tile", "amx_bf16"})
PLAIN_CPU = frozenset({"avx", "avx2", "fma"})


def test_auto_tries_int8_in_onnx_runtime_on_every_cpu() -> None:
    for flags in (BF16_CPU, AMX_CPU, PLAIN_CPU):
        plan = plan_for(EmbedSettings(), cuda_available=False, flags=flags, cores=2)
        assert (plan.device.type, plan.runtime, plan.precision) == ("cpu", "onnx", "int8")
        assert plan.dtype == torch.float32 and not plan.autocast  # int8 is checked against fp32
        assert "int8, ONNX Runtime" in plan.describe()


def test_without_int8_a_cpu_with_native_bf16_runs_under_bf16_autocast() -> None:
    for flags in (BF16_CPU, AMX_CPU):
        plan = plan_for(
            EmbedSettings(device="cpu"), cuda_available=False, flags=flags, cores=2, int8=False
        )
        assert (plan.device.type, plan.dtype, plan.autocast) == ("cpu", torch.bfloat16, True)


def test_without_int8_a_cpu_without_native_bf16_stays_fp32() -> None:
    plan = plan_for(EmbedSettings(), cuda_available=False, flags=PLAIN_CPU, cores=2, int8=False)
    assert (plan.device.type, plan.dtype, plan.autocast) == ("cpu", torch.float32, False)
    assert (plan.runtime, plan.precision) == ("onnx", "fp32")


def test_precision_int8_falls_back_to_fp32_and_runs_on_the_cpu_in_onnx_runtime_only() -> None:
    settings = EmbedSettings(precision="int8")
    assert plan_for(settings, cuda_available=False, flags=BF16_CPU, cores=2).quantized
    fallback = plan_for(settings, cuda_available=False, flags=BF16_CPU, cores=2, int8=False)
    assert (fallback.runtime, fallback.precision) == ("onnx", "fp32")
    for refused in (settings, EmbedSettings(precision="int8", runtime="torch")):
        with pytest.raises(WeightsUnavailable, match="PRECISION=int8 runs on the CPU"):
            plan_for(refused, cuda_available=True, flags=BF16_CPU, cores=2)
    # auto with torch as the runtime, or on CUDA, never quantizes
    torch_plan = plan_for(EmbedSettings(runtime="torch"), cuda_available=False, flags=BF16_CPU)
    assert not torch_plan.quantized and torch_plan.precision == "bf16"
    assert plan_for(EmbedSettings(), cuda_available=True, flags=BF16_CPU).precision == "fp16"


def test_precision_fp32_forces_full_precision_on_a_bf16_cpu_and_on_cuda() -> None:
    settings = EmbedSettings(precision="fp32")
    on_cpu = plan_for(settings, cuda_available=False, flags=BF16_CPU, cores=2)
    on_gpu = plan_for(settings, cuda_available=True, flags=BF16_CPU, cores=2)
    assert on_cpu.dtype == on_gpu.dtype == torch.float32
    assert not on_cpu.autocast and not on_gpu.autocast


def test_auto_picks_cuda_with_half_precision_when_a_gpu_is_there() -> None:
    plan = plan_for(EmbedSettings(), cuda_available=True, flags=PLAIN_CPU, cores=2)
    assert (plan.device.type, plan.dtype, plan.autocast) == ("cuda", torch.float16, False)
    assert plan.threads == 0  # torch's own CPU threads: the GPU does the work


def test_device_cpu_stays_on_the_cpu_even_with_a_gpu() -> None:
    plan = plan_for(EmbedSettings(device="cpu"), cuda_available=True, flags=PLAIN_CPU, cores=2)
    assert plan.device.type == "cpu"


def test_device_cuda_without_a_gpu_names_the_setting() -> None:
    with pytest.raises(WeightsUnavailable, match="IMGSEARCH_EMBED__DEVICE=cuda"):
        plan_for(EmbedSettings(device="cuda"), cuda_available=False, flags=PLAIN_CPU)


def test_torch_gets_every_core_unless_the_setting_pins_a_number() -> None:
    assert [auto_threads(n) for n in (0, 1, 2, 3, 4, 8)] == [1, 1, 2, 3, 4, 8]
    auto = plan_for(EmbedSettings(device="cpu"), cuda_available=False, flags=PLAIN_CPU, cores=2)
    assert auto.threads == 2
    pinned = plan_for(EmbedSettings(device="cpu", threads=1), cuda_available=False, cores=2)
    assert pinned.threads == 1


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
    )
    assert {"avx2", "avx512_bf16"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_the_encoder_follows_its_plan() -> None:
    encoder = load_encoder(EmbedSettings(weights="random", device="cpu", precision="bf16"))
    assert encoder.plan.autocast and encoder.plan.dtype == torch.bfloat16
    assert load_encoder(EmbedSettings(weights="random", device="cpu", precision="bf16")) is encoder
    first = next(encoder.model.parameters())
    assert first.dtype == torch.float32  # autocast casts per operation; weights stay fp32
    assert first.is_contiguous(memory_format=torch.channels_last)


BF16_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def test_a_cpu_without_native_bf16_runs_fp32_in_onnx_runtime_and_torch_elsewhere() -> None:
    def runtime(settings: EmbedSettings, *, cuda: bool, flags: frozenset[str]) -> str:
        return plan_for(settings, cuda_available=cuda, flags=flags, cores=2).runtime

    assert runtime(EmbedSettings(), cuda=False, flags=PLAIN_CPU) == "onnx"
    assert runtime(EmbedSettings(precision="bf16"), cuda=False, flags=BF16_CPU) == "torch"
    assert runtime(EmbedSettings(precision="fp32"), cuda=False, flags=BF16_CPU) == "onnx"
    assert runtime(EmbedSettings(), cuda=True, flags=PLAIN_CPU) == "torch"
    assert runtime(EmbedSettings(runtime="torch"), cuda=False, flags=PLAIN_CPU) == "torch"
    for settings in (EmbedSettings(runtime="onnx"), EmbedSettings(runtime="onnx", device="cuda")):
        with pytest.raises(WeightsUnavailable, match="RUNTIME=onnx runs fp32 or int8 on the CPU"):
            plan_for(settings, cuda_available=True, flags=BF16_CPU, cores=2)


def test_onnx_runtime_gives_torch_s_vectors_on_photos() -> None:
    settings = {"weights": "random", "device": "cpu", "precision": "fp32", "batch_size": 3}
    onnx = load_encoder(EmbedSettings(runtime="onnx", **settings))  # type: ignore[arg-type]
    eager = load_encoder(EmbedSettings(runtime="torch", **settings))  # type: ignore[arg-type]
    assert "ONNX Runtime" in onnx.plan.describe() and "torch" in eager.plan.describe()
    images = [photo(name) for name in BF16_PHOTOS]  # 4 photos, batch of 3: a partial batch too
    exported, reference = onnx.embed(images), eager.embed(images)
    assert exported.shape == (len(images), DIM) and exported.dtype == np.float32
    # The photos' common direction removed (see the bf16 test): each vector is its own photo's.
    mean = reference.mean(axis=0)
    agreement = _unit_rows(exported - mean) @ _unit_rows(reference - mean).T
    assert np.min(np.diag(agreement)) >= 0.9999
    assert np.max(agreement[~np.eye(len(images), dtype=bool)]) < 0.8
    np.testing.assert_allclose(exported, reference, atol=1e-5)


def test_an_export_that_fails_falls_back_to_torch_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exporting the operator 'aten::novel' is not supported")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    encoder = Encoder(EmbedSettings(weights="random", device="cpu", precision="fp32"))
    assert encoder.plan.runtime == "torch"
    assert "running it in torch" in caplog.text and "aten::novel" in caplog.text
    vectors = encoder.embed([draw_image(1), draw_image(2)])
    assert vectors.shape == (2, DIM) and not np.allclose(vectors[0], vectors[1])


def test_bf16_vectors_agree_with_fp32_on_photos(encoder: Encoder) -> None:
    # Random weights map every photo near one common direction (unrelated photos score ~0.997
    # raw cosine), so the raw 0.999 agreement alone would also pass a bf16 path that returned
    # another photo's vector. The test therefore also compares the vectors after removing the
    # photos' common direction, where different photos are far apart (cosine < 0.4 here), and
    # requires each bf16 vector's nearest fp32 vector to be its own photo's.
    bf16 = load_encoder(
        EmbedSettings(weights="random", device="cpu", precision="bf16", batch_size=8)
    )
    images = [photo(name) for name in BF16_PHOTOS]
    full = encoder.embed(images)
    half = bf16.embed(images)
    assert half.dtype == np.float32
    assert np.min(np.sum(full * half, axis=1)) >= 0.999
    assert not np.allclose(full, half, atol=1e-4), "the bf16 path computed in fp32"
    mean = full.mean(axis=0)
    full_c = _unit_rows(full - mean)
    half_c = _unit_rows(half - mean)
    agreement = half_c @ full_c.T
    assert np.min(np.diag(agreement)) >= 0.95
    assert list(np.argmax(agreement, axis=1)) == list(range(len(images)))
    others = agreement[~np.eye(len(images), dtype=bool)]
    assert np.max(others) < 0.8  # the centred comparison does tell photos apart


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_vectors_agree_with_cpu_fp32(encoder: Encoder) -> None:
    gpu = Encoder(EmbedSettings(weights="random", device="cuda", batch_size=8))
    assert gpu.plan.dtype == torch.float16
    images = [photo(name) for name in BF16_PHOTOS]
    full, half = encoder.embed(images), gpu.embed(images)
    mean = full.mean(axis=0)
    agreement = _unit_rows(half - mean) @ _unit_rows(full - mean).T
    assert np.min(np.diag(agreement)) >= 0.95
    assert list(np.argmax(agreement, axis=1)) == list(range(len(images)))
