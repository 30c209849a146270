"""The lines `mlstack status` prints about what keeps the system alive after deploy: the
keeper, the sidecars, the schedules on Prefect's server and the alerts on Prometheus."""

from __future__ import annotations

import time

from mlstack.ops.local.experiment import interval_text, what


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render_keeper(report: dict, now: float | None = None) -> list[str]:
    if not report.get("wanted") and not report.get("running"):
        return []
    now = time.time() if now is None else now
    state = (f"running (pid {report.get('pid')}), last pass "
             f"{_ago(report.get('seconds_since_last_pass'))} ago"
             if report.get("running") else "NOT running")
    repairs = report.get("repairs") or []
    lines = [f"  keeper: {state}; {len(repairs)} repair{'s' if len(repairs) != 1 else ''}"
             + (f", the last {_ago(now - repairs[-1]['at'])} ago" if repairs else "")]
    if repairs:
        last = repairs[-1]
        done = "; ".join(str(d) for d in last.get("done") or []) or "-"
        lines.append(f"    last repair: {done}")
    if report.get("problem"):
        lines.append(f"    problem: {report['problem']}")
    return lines


def render_sidecars(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        where = f" on 127.0.0.1:{row['port']}" if row.get("port") else ""
        state = (f"up {_ago(row.get('up_seconds'))} (pid {row['pid']})" if row["running"]
                 else "NOT running")
        restarts = (f", {row['restarts']} restarts (last: {row['reason']})"
                    if row.get("restarts") else "")
        lines.append(f"  sidecar {row['name']:21} {state}{where}{restarts}")
    return lines


def render_schedules(report: dict) -> list[str]:
    if not report or report.get("server") == "not started":
        return []
    orchestrator = "Airflow" if report.get("orchestrator") == "airflow" else "Prefect"
    lines = [f"  schedules: {orchestrator} {report.get('server')} (UI {report.get('ui') or '-'})"]
    for d in report.get("deployments") or []:
        every = ", ".join(d.get("schedules") or []) or "no schedule"
        last = d.get("last_run")
        done = ("never ran" if not last else
                f"last {last.get('state')} at {last.get('start') or '-'}"
                + (f" ({last['seconds']:.0f} s)" if last.get("seconds") is not None else ""))
        upcoming = d.get("next_run")
        nxt = f"next {upcoming.get('at')}" if upcoming else "none scheduled"
        paused = " PAUSED" if d.get("paused") else ""
        lines.append(f"    {d['name']:28} {every}{paused}; {done}; {nxt}")
    return lines


def render_alerts(report: dict) -> list[str]:
    if not report:
        return []
    state = report.get("state", "")
    if state != "up":
        return [f"  alerts: {state}"] if state else []
    firing = report.get("alerts") or []
    targets = report.get("targets") or []
    down = [t for t in targets if t.get("health") != "up"]
    head = (f"  alerts: {len(firing)} firing" if firing else "  alerts: none firing") + (
        f", {len(report.get('pending') or [])} pending" if report.get("pending") else "") + (
        f" (Prometheus {report.get('prometheus')}, {len(targets) - len(down)}/{len(targets)} "
        "targets up)")
    lines = [head]
    for alert in firing:
        lines.append(f"    FIRING {alert['name']} ({alert.get('severity') or '-'}) since "
                     f"{alert.get('since') or '-'}: {alert.get('summary') or ''}".rstrip(": "))
    for target in down:
        lines.append(f"    target {target['job']} {target['url']}: {target.get('health')} "
                     f"{target.get('error') or ''}".rstrip())
    if report.get("note"):
        lines.append(f"    note: {report['note']}")
    return lines


def render_prediction_log(report: dict) -> list[str]:
    """One line per version the log holds: rows logged, dropped (the log never holds a
    request up: a full queue drops), write errors; then the feedback stored."""
    if not report:
        return []
    lines = [f"  prediction log: {report['folder']}"]
    for version, counts in sorted(report["versions"].items()):
        dropped = counts["dropped"]
        lines.append(f"    {version:8} {counts['logged']} rows logged, {dropped} dropped"
                     + (" (DROPPING: the writer falls behind or fails)" if dropped else "")
                     + (f", {counts['write_errors']} write errors"
                        if counts["write_errors"] else ""))
    lines.append(f"    feedback: {report['feedback']} outcomes stored")
    return lines


def render_living(living) -> str:
    lines = (render_keeper(living.keeper) + render_sidecars(living.sidecars)
             + render_schedules(living.schedules) + render_alerts(living.alerts)
             + render_prediction_log(living.prediction_log))
    return "".join(line + "\n" for line in lines)


def render_last_retrain(history: list[dict], now: float | None = None) -> list[str]:
    """The last scheduled retrain's outcome, from the journal's entries that name the
    trigger "schedule" (a rollout, a candidate left for deploy, or no version)."""
    scheduled = [e for e in history if e.get("trigger") == "schedule"]
    if not scheduled:
        return []
    last = scheduled[-1]
    now = time.time() if now is None else now
    at = last.get("at")
    when = f"{_ago(now - at)} ago" if isinstance(at, int | float) else "-"
    what = last.get("event", "?")
    detail = last.get("version") or last.get("reason") or ""
    return [f"  last scheduled retrain: {what} {detail} ({when})".replace("  (", " (")]


def render_experiment(trial: dict, now: float | None = None) -> list[str]:
    """The A/B experiment or canary feedback guard, running or last ended: its arms, the effect with its always-valid
    interval, the p-value and the decision (the keeper's last look)."""
    if not trial:
        return []
    now = time.time() if now is None else now
    status = trial.get("status")
    share = (f"{trial['split']}% of {trial['key']}" if trial.get("key")
             else f"{trial['split']}% of the requests")
    head = (f"  {what(trial)} {trial['name']}: {status}"
            + (f" ({trial.get('outcome')}: {trial.get('reason')})" if status != "running"
               else f", {trial['candidate']} on {share}, "
               f"started {_ago(now - trial['started_at'])} ago"))
    lines = [head]
    readout = trial.get("readout")
    if not readout:
        return lines + ["    no look yet (the keeper looks every few seconds)"]
    settings = readout.get("settings", {})
    for arm, figures in readout.get("arms", {}).items():
        role = "control" if arm == settings.get("control") else "candidate"
        lines.append(f"    {arm:8} {role:9} n {figures['n']:<7} {settings.get('metric')} "
                     f"{figures['mean']:.4g}")
    low, high = readout.get("effect_low"), readout.get("effect_high")
    interval = interval_text(low, high)
    lift = readout.get("relative_lift")
    lines.append(f"    effect {readout['effect']:+.4g} {interval} "
                 f"({1 - readout['alpha']:.0%} always-valid)"
                 + (f", lift {lift:+.1%}" if lift is not None else "")
                 + f"; p {readout['p_value']:.3g} after {readout['looks']} looks")
    decision, reason = readout["decision"], readout["reason"]
    lines.append(f"    decision: {reason}" if reason.startswith(decision)
                 else f"    decision: {decision} ({reason})")
    if readout.get("invalid_outcomes"):
        lines.append(f"    {readout['invalid_outcomes']} outcomes left out (not a "
                     f"{settings.get('metric')})")
    return lines
