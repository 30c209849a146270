"""The promote stage, the deploy's commit point: the new version becomes current in the
record (saved), then the old one stops. Killed before the save, the next command rolls the
deploy back; after it, forward. Then the keeper is made to run, so the versions and
sidecars stay supervised after the deploy's process ends."""

from __future__ import annotations

from mlstack.diagnostics.errors import StageError
from mlstack.ops.local import airflow_scheduler, experiment, keeper, sidecars
from mlstack.ops.local.services import route, stop_version
from mlstack.ops.local.stages.context import DeployContext
from mlstack.ops.local.state import VersionStatus


def run(ctx: DeployContext) -> None:
    with ctx.stages.stage("promote") as record:
        if any(step.get("strategy") == "ab" or step.get("held")
               for step in ctx.rollout_steps):
            in_experiment(ctx)
            record.detail = (f"{ctx.version.version} in the {experiment.what(ctx.state.experiment)}"
                             f"; {ctx.state.current} stays current until the readout decides")
        else:
            promote(ctx)
            record.detail = (f"{ctx.version.version} serves 100% at "
                             f"http://127.0.0.1:{ctx.options.port}")
    start_keeper(ctx)


def in_experiment(ctx: DeployContext) -> None:
    """Strategy ab, or a canary held for its feedback guard: the deploy ends with the
    candidate READY on its split and the control current; the keeper promotes or aborts by
    the readout (ops.local.experiment)."""
    state, version = ctx.state, ctx.version
    version.status = VersionStatus.READY
    state.deploy = {}
    state.record("deploy-succeeded", version=version.version, model_tag=version.model_tag,
                 experiment=state.experiment.get("name"), **_trigger(ctx))
    state.save()


def promote(ctx: DeployContext) -> None:
    paths, state, version, current = ctx.paths, ctx.state, ctx.version, ctx.current
    route(paths, {version.version: 100}, state)
    version.status = VersionStatus.SERVING
    if current is not None and current.version != version.version:
        state.previous = current.version
    state.current = version.version
    state.deploy = {}
    steps = [s["weight"] for s in ctx.rollout_steps if "weight" in s]
    state.record("deploy-succeeded", version=version.version, model_tag=version.model_tag,
                 **({"rollout": steps} if steps else {}), **_trigger(ctx))
    state.save()
    if current is not None and current.version != version.version:
        with state.action("stop", version=current.version):
            stop_version(paths, current)
            current.status = VersionStatus.STOPPED


def _trigger(ctx: DeployContext) -> dict:
    trigger = getattr(ctx.plan, "trigger", "deploy")
    return {} if trigger == "deploy" else {"trigger": trigger}


def start_keeper(ctx: DeployContext) -> None:
    """The keeper process (mlstack.ops.local.keeper) made to run after a successful deploy,
    so the versions, the router and the sidecars stay supervised after the deploy's process
    ends. A keeper that cannot start fails the deploy, naming itself. First the sidecars
    follow the version now serving (the Prefect runner runs its flows), here under the
    deploy's lock, so the deploy ends with them up rather than at the keeper's next pass
    (status right after a deploy found the runner down mid-restart)."""
    try:
        declared = sidecars.declared(ctx.paths, ctx.system)
        sidecars.start_all(ctx.paths, declared)
        airflow_scheduler.settle(ctx.paths, ctx.system, declared)
    except RuntimeError:
        pass  # the version serves; the keeper restarts the sidecar with its backoff, and
        # status names it until then
    try:
        keeper.ensure_running(ctx.paths)
    except Exception as exc:
        raise StageError("keeper", f"the keeper did not start: {exc}") from exc
