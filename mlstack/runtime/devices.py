"""Which device training runs on: the spec's target.training.gpu against what is visible.

    policy = DevicePolicy(framework="xgboost", gpus=1, preferred=False)
    choice = choose_device(policy)          # raises NoGpuError when none is visible
    choice.device                           -> "cuda" | "cpu"
    choice.reason                           -> why, for the flow's log and run record
    estimator_device_params("xgboost", "cuda")   -> {"device": "cuda"}

A plain GPU count is a requirement: with no CUDA device visible the flow stops before training
(NoGpuError). `gpu: preferred` uses a GPU when one is visible and falls back to the CPU
otherwise, saying so. Frameworks without GPU training (scikit-learn) always use the CPU.
Visibility is read without importing a CUDA library (`visible_cuda_devices`), and every
function takes the detection as an argument so that it can be tested on any machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DeviceChoice", "DevicePolicy", "NoGpuError", "choose_device",
           "estimator_device_params", "for_serving", "opencl_drivers", "visible_cuda_devices"]

GPU_FRAMEWORKS = ("xgboost", "lightgbm", "pytorch")
# The constructor parameter each framework's scikit-learn wrapper moves to a GPU by. LightGBM's
# "gpu" is its OpenCL build (the pip wheels for Linux include it); "cuda" needs a source build.
_DEVICE_PARAM = {"xgboost": ("device", "cuda", "cpu"),
                 "lightgbm": ("device_type", "gpu", "cpu"),
                 "pytorch": ("device", "cuda", "cpu")}
_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
_OPENCL_VENDORS = Path("/etc/OpenCL/vendors")


class NoGpuError(RuntimeError):
    """target.training.gpu asks for GPUs and none is visible: the flow stops before training."""


@dataclass(frozen=True)
class DevicePolicy:
    """The spec's ask: the framework, the GPU count (target.training.gpu) and whether the
    CPU is an acceptable fallback (gpu: preferred)."""

    framework: str
    gpus: int = 0
    preferred: bool = False


@dataclass(frozen=True)
class DeviceChoice:
    """The device training uses ('cuda' or 'cpu'), why, and how many CUDA devices were seen."""

    device: str
    reason: str
    visible_gpus: int = 0

    def as_record(self) -> dict[str, Any]:
        return {"device": self.device, "reason": self.reason, "visible_gpus": self.visible_gpus}


def visible_cuda_devices(environ: Mapping[str, str] | None = None, proc: Path = _NVIDIA_PROC,
                         run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
                         ) -> int:
    """How many CUDA devices this process may use: the NVIDIA driver's GPUs (its /proc entries,
    else `nvidia-smi -L`), limited by CUDA_VISIBLE_DEVICES when that is set."""
    env = os.environ if environ is None else environ
    found = 0
    if proc.is_dir():
        found = sum(1 for _ in proc.iterdir())
    elif shutil.which("nvidia-smi", path=env.get("PATH")):
        try:
            listed = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            if listed.returncode == 0:
                found = sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            found = 0
    masked = env.get("CUDA_VISIBLE_DEVICES")
    if masked is not None:
        named = [d for d in masked.split(",") if d.strip()]
        if not named or named[0].strip() == "-1":
            return 0
        found = min(found, len(named))
    return found


def opencl_drivers(vendors: Path = _OPENCL_VENDORS) -> int:
    """How many OpenCL drivers are installed (their ICD files): LightGBM's GPU build runs on
    OpenCL, which NVIDIA's container images do not always carry."""
    return sum(1 for p in vendors.glob("*.icd")) if vendors.is_dir() else 0


def choose_device(policy: DevicePolicy,
                  detect: Callable[[], int] = visible_cuda_devices,
                  detect_opencl: Callable[[], int] = opencl_drivers) -> DeviceChoice:
    """The device for `policy`; NoGpuError when GPUs are required and none is visible."""
    framework, gpus = policy.framework, policy.gpus
    if framework not in GPU_FRAMEWORKS:
        reason = (f"{framework} trains on the CPU" + (
            "; target.training.gpu is not used by it" if gpus or policy.preferred else ""))
        return DeviceChoice("cpu", reason)
    if not gpus and not policy.preferred:
        return DeviceChoice("cpu", "target.training.gpu is 0")
    seen = detect()
    if seen and framework == "lightgbm" and not detect_opencl():
        why = (f"{seen} CUDA device(s) are visible, but LightGBM's GPU build runs on OpenCL and "
               f"no OpenCL driver is installed ({_OPENCL_VENDORS}/*.icd)")
        if policy.preferred:
            return DeviceChoice("cpu", f"gpu: preferred: {why}: lightgbm falls back to the CPU",
                                seen)
        raise NoGpuError(f"target.training.gpu is {gpus}: {why}; install the NVIDIA OpenCL "
                         "driver, or set gpu: preferred to fall back to CPU")
    if seen:
        why = "gpu: preferred" if policy.preferred else f"target.training.gpu is {gpus}"
        return DeviceChoice("cuda", f"{why} and {seen} CUDA device(s) are visible: "
                            f"{framework} trains on cuda", seen)
    if policy.preferred:
        return DeviceChoice("cpu", "gpu: preferred but no CUDA device is visible: "
                            f"{framework} falls back to the CPU", 0)
    raise NoGpuError(f"target.training.gpu is {gpus} but no CUDA device is visible to the "
                     "training flow (no NVIDIA driver GPU, or CUDA_VISIBLE_DEVICES hides them); "
                     "set gpu: preferred to fall back to CPU")


def estimator_device_params(framework: str, device: str) -> dict[str, str]:
    """The constructor parameters that put `framework`'s estimator on `device` (none for the
    CPU default, so a CPU model is built exactly as the spec writes it)."""
    if device != "cuda" or framework not in _DEVICE_PARAM:
        return {}
    name, gpu, _cpu = _DEVICE_PARAM[framework]
    return {name: gpu}


def for_serving(model: Any, framework: str) -> Any:
    """A fitted model set to predict on the CPU (evaluation, registration and the service
    run there): a GPU-trained estimator's device parameter is set back to the CPU one."""
    if framework not in _DEVICE_PARAM or not hasattr(model, "get_params"):
        return model
    name, gpu, cpu = _DEVICE_PARAM[framework]
    if model.get_params().get(name) == gpu:
        model.set_params(**{name: cpu})
    return model
