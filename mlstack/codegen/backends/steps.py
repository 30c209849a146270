"""The pipeline steps another orchestrator than Prefect runs: `<package>/steps.py`.

One function per task of the contract's task lists, each calling the same mlstack.runtime
functions as the Prefect task of the same name and passing data between tasks as files at the
paths it is given. The Kubeflow backend runs them as `python -m <package>.steps STEP ...` in
containers; the Airflow backend calls them from its TaskFlow tasks. One template, so the two
cannot drift apart.
"""

from __future__ import annotations

from mlstack.codegen.backends.prefect import flow_context
from mlstack.codegen.backends.shared import header
from mlstack.codegen.contract import package_name
from mlstack.codegen.jinja import render_template
from mlstack.frontend.ir.nodes import SystemIR

STEPS_TEMPLATE = "steps/steps.py.j2"


def steps_module(system: SystemIR) -> str:
    """The steps' module, as imported: 'churn_system.steps'."""
    return f"{package_name(system)}.steps"


def steps_path(system: SystemIR) -> str:
    return f"{package_name(system)}/steps.py"


def render_steps(system: SystemIR) -> str:
    return render_template(STEPS_TEMPLATE, system=system, package=package_name(system),
                           header=header(system), **flow_context(system))
