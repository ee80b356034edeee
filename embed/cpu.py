"""What the CPU can do, from /proc/cpuinfo: the flags that decide how the networks run."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that change which kernels run (int8 dot products, bf16 arithmetic, vector width),
# recorded beside every benchmark figure.
MATTERS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    return frozenset(_field(cpuinfo, ("flags", "Features")).split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name ("" where /proc/cpuinfo does not say)."""
    return _field(cpuinfo, ("model name", "Model")).strip()


def describe_cpu(cpuinfo: Path = CPUINFO) -> dict[str, object]:
    """The model name and, for each flag that matters, whether the CPU has it ("amx": any of
    amx_tile, amx_int8, amx_bf16)."""
    flags = cpu_flags(cpuinfo)
    found: dict[str, object] = {"model": cpu_model(cpuinfo)}
    for flag in MATTERS:
        found[flag] = any(f.startswith("amx") for f in flags) if flag == "amx" else flag in flags
    return found


def _field(cpuinfo: Path, keys: tuple[str, ...]) -> str:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value
    return ""
