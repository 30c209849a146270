"""Backends turn the IR into files. A registry maps names to implementations (lazily).

Each backend is one small module with a class that declares its templates (under
templates/<name>/) and implements `render(system, options) -> FileTree`. Backends read
only the IR (`mlstack.frontend.ir.nodes`), never the spec or raw YAML.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from mlstack.codegen.filetree import FileTree
from mlstack.frontend.ir.nodes import SystemIR

REGISTRY: dict[str, str] = {
    # order matters only for readability; output is sorted by path
    "shared": "mlstack.codegen.backends.shared:SharedBackend",
    "feast": "mlstack.codegen.backends.feast:FeastBackend",
    "bentoml": "mlstack.codegen.backends.bentoml:BentoMLBackend",
    "prefect": "mlstack.codegen.backends.prefect:PrefectBackend",
    # target.orchestrator: kubeflow (kubernetes target)
    "kubeflow": "mlstack.codegen.backends.kubeflow:KubeflowBackend",
    # target.orchestrator: airflow
    "airflow": "mlstack.codegen.backends.airflow:AirflowBackend",
    "infra": "mlstack.codegen.backends.infra:InfraBackend",  # kubernetes and aws targets
    "monitoring": "mlstack.codegen.backends.monitoring:MonitoringBackend",
}


@dataclass(frozen=True)
class CompileOptions:
    """How the generated tree finds the project: `project_dir` is the spec's folder relative
    to the output root (POSIX, e.g. '..' for PROJECT/build). No absolute paths, ever."""

    project_dir: str = ".."


class Backend(Protocol):
    name: str
    templates: tuple[str, ...]

    def applies(self, system: SystemIR) -> bool: ...

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree: ...


def load_backend(name: str) -> Backend:
    module_name, cls_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)()

