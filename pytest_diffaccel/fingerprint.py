"""Environment identity: what decides kernels and numerics, recorded with every run and baseline file.

Two halves, because they answer different questions:

* **hardware** (the CPU's vendor, family, model, stepping and the instruction sets torch dispatches
  on, the cores this process may use; the GPU's name, compute capability, memory, SM count, power
  limit and MIG slice). Another hardware fingerprint is another machine: other kernels, other
  pixels, other speeds. Its history is never this machine's; it is not judged at all.
* **software** (python, torch and its build: CUDA, cuDNN, the CPU capability torch picked and its
  thread count; on a GPU, the NVIDIA driver; diffusers, transformers, accelerate, torchao, ...). A
  change here is what users want caught ("did the upgrade slow us down?"): it is judged against the
  same hardware's history, and
  the verdict names it (``torch 2.12.0 -> 2.13.0``, ``nvidia driver 550.54.15 -> 555.42.02``: a
  driver updated overnight is the same card running other code, judged like an upgrade of torch).

``probe`` reads the machine (torch imported lazily, only when a run uses the plugin); everything
else is pure.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

# Instruction sets that select different CPU kernels in torch/oneDNN (and so other speeds and other
# low bits): /proc/cpuinfo flag names.
ISA_FLAGS = (
    "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
LIBRARIES = ("diffusers", "transformers", "accelerate", "torchao", "xformers", "scikit-image")
HASH_LENGTH = 8


# ----------------------------------------------------------------------------- pure


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's identity from /proc/cpuinfo text (Linux x86 and ARM fields)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    cpu: dict[str, Any] = {
        "vendor": fields.get("vendor_id") or fields.get("cpu implementer") or None,
        "model_name": fields.get("model name") or fields.get("cpu part") or None,
        "family": fields.get("cpu family") or fields.get("cpu architecture") or None,
        "model": fields.get("model") or fields.get("cpu variant") or None,
        "stepping": fields.get("stepping") or fields.get("cpu revision") or None,
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
    }
    return cpu


_DRIVER = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)*)")


def parse_driver_version(text: str) -> str | None:
    """The driver's version from /proc/driver/nvidia/version ('NVRM version: NVIDIA UNIX x86_64 Kernel
    Module  550.54.15  ...', or '... Open Kernel Module for x86_64  550.54.15 ...'); None when absent."""
    found = _DRIVER.search(text)
    return found.group(1) if found else None


def hardware_hash(hardware: Mapping[str, Any]) -> str:
    """A short, stable hash of the hardware half: the same machine gives the same hash on every run."""
    text = json.dumps(hardware, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def describe_hardware(hardware: Mapping[str, Any]) -> str:
    """One line a person reads: 'Intel(R) Xeon(R) Processor (family 6 model 167 stepping 1), avx2 ... ; 2 cores'."""
    parts = []
    gpu = hardware.get("gpu")
    if isinstance(gpu, Mapping):
        text = f"{gpu.get('name')} (sm {gpu.get('capability')}, {gpu.get('memory_gib')} GiB, {gpu.get('sms')} SMs"
        if gpu.get("power_limit_w"):
            text += f", {gpu['power_limit_w']} W"
        if gpu.get("mig"):
            text += f", MIG {gpu['mig']}"
        parts.append(text + ")")
    cpu = hardware.get("cpu")
    if isinstance(cpu, Mapping):
        where = " ".join(
            f"{label} {cpu[key]}"
            for key, label in (("family", "family"), ("model", "model"), ("stepping", "stepping"))
            if cpu.get(key) is not None
        )
        isa = ", ".join(cpu.get("isa") or ()) or "no AVX2"
        parts.append(f"{cpu.get('model_name') or 'CPU'} ({where}), {isa}")
    if hardware.get("cores") is not None:
        parts.append(f"{hardware['cores']} cores")
    return "; ".join(parts) or "unknown hardware"


def hardware_differences(then: Mapping[str, Any] | None, now: Mapping[str, Any]) -> str:
    """What differs between a recorded hardware fingerprint and this one, in one clause:
    'was recorded without avx512_bf16, avx512_fp16; this CPU has them'."""
    if not then:
        return "was recorded before environment fingerprints (its hardware is unknown)"
    clauses = []
    then_cpu, now_cpu = then.get("cpu") or {}, now.get("cpu") or {}
    if then.get("device") != now.get("device"):
        clauses.append(f"was recorded on {then.get('device')}, this run is on {now.get('device')}")
    then_isa, now_isa = set(then_cpu.get("isa") or ()), set(now_cpu.get("isa") or ())
    if now_isa - then_isa:
        gained = ", ".join(sorted(now_isa - then_isa))
        clauses.append(f"was recorded without {gained}; this CPU has {'them' if len(now_isa - then_isa) > 1 else 'it'}")
    if then_isa - now_isa:
        lost = ", ".join(sorted(then_isa - now_isa))
        clauses.append(f"was recorded with {lost}; this CPU lacks {'them' if len(then_isa - now_isa) > 1 else 'it'}")
    for key, label in (("vendor", "CPU vendor"), ("model_name", "CPU"), ("family", "CPU family"),
                       ("model", "CPU model"), ("stepping", "CPU stepping")):  # fmt: skip
        if then_cpu.get(key) != now_cpu.get(key):
            clauses.append(f"{label} {then_cpu.get(key)} there, {now_cpu.get(key)} here")
    if then.get("cores") != now.get("cores"):
        clauses.append(f"{then.get('cores')} usable cores there, {now.get('cores')} here")
    then_gpu, now_gpu = then.get("gpu") or {}, now.get("gpu") or {}
    for key in sorted(set(then_gpu) | set(now_gpu)):
        if then_gpu.get(key) != now_gpu.get(key):
            clauses.append(f"GPU {key} {then_gpu.get(key)} there, {now_gpu.get(key)} here")
    return "; ".join(clauses) or "differs in a field this version does not name"


def software_changes(then: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """'torch 2.12.0 -> 2.13.0', one per changed library or build setting (names in a stable order)."""
    if not then:
        return []
    changes = []
    for name in sorted(set(then) | set(now)):
        old, new = then.get(name), now.get(name)
        if name not in then:  # a field newer versions record: not a change of the stack
            continue
        if old != new:
            changes.append(f"{name} {old if old is not None else 'absent'} -> {new if new is not None else 'absent'}")
    return changes


# ----------------------------------------------------------------------------- probing the machine


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_versions(names: Sequence[str] = ("torch", *LIBRARIES)) -> dict[str, str | None]:
    """Each distribution's installed version, None when it is not installed."""
    return {name: _version(name) for name in names}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def cpu_identity() -> dict[str, Any]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return parse_cpuinfo(handle.read())
    except OSError:
        return {"vendor": None, "model_name": platform.processor() or platform.machine() or None,
                "family": None, "model": None, "stepping": None, "isa": []}  # fmt: skip


def gpu_identity() -> dict[str, Any]:
    """The current CUDA device: name, capability, memory, SMs, the power limit (through NVML or nvidia-smi,
    None when neither answers) and whether it is a MIG slice. The driver is software (``nvidia_driver``)."""
    import torch

    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    gpu: dict[str, Any] = {
        "name": str(props.name),
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "sms": int(props.multi_processor_count),
        "power_limit_w": None,
        "mig": None,
    }
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if "MIG-" in visible:
        gpu["mig"] = "slice"
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        gpu["power_limit_w"] = round(pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000)
        try:
            current, _ = pynvml.nvmlDeviceGetMigMode(handle)
            if current:
                gpu["mig"] = "enabled"
        except pynvml.NVMLError:
            pass
    except Exception:  # no NVML: ask nvidia-smi
        limit = _nvidia_smi("power.limit", index)
        with contextlib.suppress(ValueError):  # "[N/A]" on cards that don't report one
            gpu["power_limit_w"] = round(float(limit)) if limit else None
    return gpu


def _nvidia_smi(field: str, index: int = 0) -> str | None:
    """One field of nvidia-smi's query for GPU ``index`` ('550.54.15', '700.00'), None when it can't tell."""
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", f"--id={index}"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip().splitlines()[0].strip() if done.returncode == 0 and done.stdout.strip() else ""
    return value or None


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version: the kernel module's own file, else nvidia-smi; None without a driver."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as handle:
            found = parse_driver_version(handle.read())
        if found:
            return found
    except OSError:
        pass
    return _nvidia_smi("driver_version")


def software(device: str = "cpu") -> dict[str, Any]:
    """Python, torch's build and thread count, on a GPU the driver, the libraries: what a change of stack
    is made of."""
    import torch

    values: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": _version("torch") or str(torch.__version__),
        "torch cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch cpu capability": torch.backends.cpu.get_cpu_capability(),
        "torch threads": torch.get_num_threads(),
    }
    if device == "cuda":
        values["nvidia driver"] = nvidia_driver()
    values.update(installed_versions(LIBRARIES))
    return values


def hardware(device: str) -> dict[str, Any]:
    """The hardware half for ``device``: the CPU for CPU runs; the GPU for CUDA runs (its host CPU
    decides little of a GPU pipeline's time and nothing of its pixels)."""
    if device == "cuda":
        return {"device": "cuda", "gpu": gpu_identity()}
    return {"device": "cpu", "cpu": cpu_identity(), "cores": usable_cores()}


def probe(device: str) -> dict[str, Any]:
    """This run's fingerprint: {'hash', 'hardware', 'software', 'platform'}."""
    hw = hardware(device)
    return {
        "hash": hardware_hash(hw),
        "hardware": hw,
        "software": software(device),
        "platform": f"{platform.system()} {platform.release()} ({sys.platform})",
    }
