"""The infra backend: a CDK Terrain (cdktn) Python app under infra/ for cluster and cloud targets.

The app is small, readable Python: config.py holds every value derived from the spec (as
literals), <target>_stack.py builds the resources from it, main.py synthesizes Terraform JSON
into infra/cdktf.out/stacks/<stack>/cdk.tf.json. mlstack.ops.cluster.infra_env runs it in an isolated
environment built from infra/requirements.txt.
"""

from __future__ import annotations

import json
import uuid

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.infra_model import infra_config, stack_name
from mlstack.codegen.backends.shared import header
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.jinja import render_template
from mlstack.frontend.ir.nodes import SystemIR

CDKTN = ("cdktn==0.24.0", "constructs==10.7.2", "jsii==1.142.0")
REQUIREMENTS = {
    "aws": CDKTN + ("cdktn-provider-aws==25.8.1",),
    # kubernetes resources are written in the provider's schema through cdktn's generic
    # resource, so the app needs no 130 MB binding package
    "kubernetes": CDKTN,
}
GITIGNORE = ("cdktf.out/", ".terraform/", "*.tfstate", "*.tfstate.*", "tfplan")


def requirements(kind: str) -> tuple[str, ...]:
    return tuple(sorted(REQUIREMENTS[kind]))


class InfraBackend:
    name = "infra"
    templates = ("infra/main.py.j2", "infra/config.py.j2", "infra/accepted_checks.py.j2",
                 "infra/aws_stack.py.j2", "infra/kubernetes_stack.py.j2",
                 "infra/kubernetes_pipelines.py.j2",
                 "infra/requirements.txt.j2")

    def applies(self, system: SystemIR) -> bool:
        return system.target.kind in REQUIREMENTS

    # -- what plan asks of the backend (the stack's resources, its name and its cost) --------
    def planned_resources(self, system: SystemIR) -> dict[tuple[str, str], dict[str, object]]:
        """{(terraform type, name): {config input: value}} of the system's stack."""
        from mlstack.codegen.backends.infra_inputs import infra_properties

        return infra_properties(system) if self.applies(system) else {}

    def stack_name(self, system: SystemIR) -> str:
        return stack_name(system)

    def monthly_cost(self, system: SystemIR):
        """The stack's monthly cost estimate (mlstack.codegen.backends.infra_costs)."""
        from mlstack.codegen.backends.infra_costs import estimate_monthly_cost

        return estimate_monthly_cost(system)

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        kind = system.target.kind
        context = dict(system=system, header=header(system), config=infra_config(system),
                       requirements=requirements(kind))
        tree = FileTree()
        for template in ("main.py", "config.py", "accepted_checks.py", f"{kind}_stack.py",
                         "requirements.txt"):
            tree.add(f"infra/{template}", render_template(f"infra/{template}.j2", **context))
        tree.add("infra/cdktf.json", _json(cdktf_json(system)))
        tree.add("infra/.gitignore", header(system) + "".join(f"{g}\n" for g in GITIGNORE))
        if kind == "kubernetes":
            from mlstack.codegen.backends.monitoring import rule_groups

            tree.add("infra/prometheus-rules.json", _json({"groups": rule_groups(system)}))
        return tree


def cdktf_json(system: SystemIR) -> dict:
    return {
        "language": "python",
        "app": "python main.py",
        # stable per system, so the file is deterministic
        "projectId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlstack:{system.name}")),
        "sendCrashReports": "false",
        "terraformProviders": [],
        "terraformModules": [],
        "codeMakerOutput": "imports",
        "context": {},
    }


def _json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
