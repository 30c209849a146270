"""The training device: target.training.gpu against the CUDA devices visible, the detection
injected (this machine has no GPU), and the estimator parameters each framework moves by."""

from __future__ import annotations

import subprocess

import pytest

from mlstack.runtime.devices import (
    DevicePolicy,
    NoGpuError,
    choose_device,
    estimator_device_params,
    for_serving,
    opencl_drivers,
    visible_cuda_devices,
)


def _gpus(n):
    return lambda: n


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm", "pytorch"])
def test_a_required_gpu_trains_on_cuda_and_stops_when_none_is_visible(framework):
    choice = choose_device(DevicePolicy(framework, gpus=1), detect=_gpus(2),
                           detect_opencl=_gpus(1))
    assert choice.device == "cuda" and choice.visible_gpus == 2
    assert "target.training.gpu is 1" in choice.reason
    with pytest.raises(NoGpuError, match="target.training.gpu is 1 but no CUDA device is "
                       "visible.*set gpu: preferred to fall back to CPU"):
        choose_device(DevicePolicy(framework, gpus=1), detect=_gpus(0))


def test_preferred_uses_a_gpu_when_present_else_falls_back_and_says_so():
    policy = DevicePolicy("xgboost", gpus=1, preferred=True)
    assert choose_device(policy, detect=_gpus(1)).device == "cuda"
    fallback = choose_device(policy, detect=_gpus(0))
    assert fallback.device == "cpu"
    assert "falls back to the CPU" in fallback.reason
    assert fallback.as_record() == {"device": "cpu", "reason": fallback.reason,
                                    "visible_gpus": 0}


def test_lightgbm_on_a_gpu_needs_an_opencl_driver():
    policy = DevicePolicy("lightgbm", gpus=1)
    with pytest.raises(NoGpuError, match="no OpenCL driver is installed.*set gpu: preferred"):
        choose_device(policy, detect=_gpus(1), detect_opencl=_gpus(0))
    fallback = choose_device(DevicePolicy("lightgbm", gpus=1, preferred=True), detect=_gpus(1),
                             detect_opencl=_gpus(0))
    assert fallback.device == "cpu" and "lightgbm falls back to the CPU" in fallback.reason
    assert choose_device(DevicePolicy("xgboost", gpus=1), detect=_gpus(1),
                         detect_opencl=_gpus(0)).device == "cuda"  # CUDA itself


def test_opencl_drivers_are_counted_by_their_icd_files(tmp_path):
    assert opencl_drivers(tmp_path / "none") == 0
    (tmp_path / "nvidia.icd").write_text("libnvidia-opencl.so.1\n")
    (tmp_path / "README").write_text("")
    assert opencl_drivers(tmp_path) == 1


def test_no_gpu_asked_or_a_cpu_framework_never_looks_for_one():
    def detect():
        raise AssertionError("detection must not run")

    assert choose_device(DevicePolicy("xgboost"), detect=detect).device == "cpu"
    sklearn = choose_device(DevicePolicy("sklearn", gpus=1), detect=detect)
    assert sklearn.device == "cpu" and "not used" in sklearn.reason


def test_estimator_params_per_framework():
    assert estimator_device_params("xgboost", "cuda") == {"device": "cuda"}
    assert estimator_device_params("lightgbm", "cuda") == {"device_type": "gpu"}
    assert estimator_device_params("pytorch", "cuda") == {"device": "cuda"}
    assert estimator_device_params("xgboost", "cpu") == {}
    assert estimator_device_params("sklearn", "cuda") == {}


def test_a_gpu_trained_model_is_set_back_to_the_cpu_for_serving():
    class Model:
        def __init__(self, **params):
            self.params = params

        def get_params(self):
            return dict(self.params)

        def set_params(self, **params):
            self.params.update(params)
            return self

    assert for_serving(Model(device="cuda"), "xgboost").params == {"device": "cpu"}
    assert for_serving(Model(device_type="gpu"), "lightgbm").params == {"device_type": "cpu"}
    assert for_serving(Model(device="cpu"), "xgboost").params == {"device": "cpu"}
    untouched = Model(device="cuda")
    assert for_serving(untouched, "sklearn") is untouched and untouched.params["device"] == "cuda"


def test_visible_devices_from_the_driver_nvidia_smi_and_cuda_visible_devices(tmp_path):
    proc = tmp_path / "gpus"
    proc.mkdir()
    for pci in ("0000:01:00.0", "0000:02:00.0"):
        (proc / pci).mkdir()
    assert visible_cuda_devices({}, proc) == 2
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": "1"}, proc) == 1
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": ""}, proc) == 0
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": "-1"}, proc) == 0
    missing = tmp_path / "none"
    assert visible_cuda_devices({"PATH": str(tmp_path)}, missing) == 0  # no nvidia-smi
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)

    def run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, "GPU 0: NVIDIA H200 (UUID: x)\n", "")

    assert visible_cuda_devices({"PATH": str(smi.parent)}, missing, run=run) == 1

    def broken(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, 10)

    assert visible_cuda_devices({"PATH": str(smi.parent)}, missing, run=broken) == 0
