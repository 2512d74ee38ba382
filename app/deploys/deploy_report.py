"""What `cronbeat deploy status`, `GET /api/deploy/status` and `cronbeat health` say (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from app.deploys.deploy import DeployStatus
from app.deploys.processes import ProcessView
from app.enums import ProcessRole


def _instant(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _consuming(row: ProcessView) -> str:
    if row.consuming is None:
        return ""
    return f"consuming {','.join(row.queues)}" if row.consuming else "consuming nothing"


def process_line(row: ProcessView) -> str:
    """One process, as ``deploy status`` and ``health`` print it."""
    parts = [f"{row.kind.value:<10}", f"{row.hostname} pid {row.pid}", f"{row.role.value:<10}"]
    if row.consuming is not None:
        parts.append(_consuming(row))
    parts.append(f"seen {row.seen_s_ago:.0f} s ago")
    line = "  ".join(parts)
    return f"{line}  PROBLEM: {row.problem}" if row.problem else line


def status_text(status: DeployStatus) -> str:
    """The text of ``cronbeat deploy status``."""
    state = status.state
    if state.active_deployment_id is None:
        lines = [f"active deployment: none (gating is off: every process runs; "
                 f"generation {state.generation})"]
    else:
        lines = [f"active deployment: {state.active_deployment_id} "
                 f"(generation {state.generation})"]
    for group in status.groups:
        head = f"deployment {group.deployment_id or '(unversioned)'}: {group.standing}"
        if group.last_activated_at is not None:
            head += f", last activated {_instant(group.last_activated_at)}"
        lines.append(head)
        lines.extend(f"  {process_line(row)}" for row in group.processes)
        if not group.processes:
            lines.append("  no live processes")
    return "\n".join(lines)


def _process_json(row: ProcessView) -> dict[str, Any]:
    return {
        "id": str(row.id), "kind": row.kind.value, "hostname": row.hostname, "pid": row.pid,
        "queues": list(row.queues), "role": row.role.value, "consuming": row.consuming,
        "problem": row.problem, "started_at": _instant(row.started_at),
        "last_seen_at": _instant(row.last_seen_at), "seen_s_ago": round(row.seen_s_ago, 1),
    }


def status_json(status: DeployStatus) -> dict[str, Any]:
    """The JSON of ``deploy status`` (the API's answer has the same shape)."""
    return {
        "active_deployment_id": status.state.active_deployment_id,
        "generation": status.state.generation,
        "gating": status.state.active_deployment_id is not None,
        "deployments": [
            {"deployment_id": group.deployment_id, "standing": group.standing,
             "last_activated_at": _instant(group.last_activated_at),
             "processes": [_process_json(row) for row in group.processes]}
            for group in status.groups
        ],
    }


def health_verdict(rows: Sequence[ProcessView], kind: str, hostname: str) -> tuple[bool, list[str]]:
    """Judge this host's processes of one kind; returns (healthy, lines saying why).

    Healthy: every live one is active (and, for a consumer, consuming) or a standby,
    and reports no problem. Unhealthy: none is live, or one is superseded, or one
    reports a problem (an active worker consuming nothing, a stalled loop).
    """
    live = [row for row in rows if row.live]
    if not live:
        seen = min((row.seen_s_ago for row in rows), default=None)
        last = f" (last heartbeat {seen:.0f} s ago)" if seen is not None else ""
        return False, [f"unhealthy: no live {kind} process on {hostname}{last}"]
    healthy = True
    lines = []
    for row in live:
        if row.problem:
            verdict = "unhealthy"
        elif row.role is ProcessRole.SUPERSEDED:
            verdict = "unhealthy: superseded, it takes no work; stop it"
        elif row.role is ProcessRole.STANDBY:
            verdict = "healthy: standby until its deployment is activated"
        else:
            verdict = "healthy"
        healthy = healthy and verdict.startswith("healthy")
        lines.append(f"{verdict}  deployment {row.deployment_id or '(unversioned)'}  "
                     f"{process_line(row)}")
    return healthy, lines


def standby_advice(active_deployment_id: str, deployment_id: str | None) -> str:
    """How to make a process of ``deployment_id`` run while another deployment is active:
    commands that work as printed."""
    if deployment_id is None:
        return (f"start it with CRONBEAT_DEPLOYMENT_ID={active_deployment_id} (the active"
                f" deployment's id), or turn gating off with `cronbeat deploy reset`")
    return (f"activate its deployment with `cronbeat deploy activate {deployment_id}`, or"
            f" turn gating off with `cronbeat deploy reset`")


def fleet_verdict(active_deployment_id: str | None,
                  rows: Sequence[ProcessView]) -> tuple[bool, list[str]]:
    """Whether the fleet runs anything: a live active worker consuming cronbeat.runs and a
    live active beat or dispatcher (pure); returns (working, lines saying why).

    A fleet of standbys (all of another deployment than the active one, or unversioned
    while gating is on) is up and healthy one by one, and runs nothing: this tells it
    apart.
    """
    live = [row for row in rows if row.live]
    active = [row for row in live if row.role is ProcessRole.ACTIVE]
    workers = [row for row in active if "cronbeat.runs" in row.queues and row.consuming]
    tickers = [row for row in active if row.kind.value in ("beat", "dispatcher")]
    gating = (f"deployment {active_deployment_id} is active" if active_deployment_id
              else "gating is off")
    if workers and tickers:
        return True, [f"working: {gating}; {len(workers)} active worker(s) consuming"
                      f" cronbeat.runs, {len(tickers)} active beat/dispatcher process(es)"]
    missing = [what for what, found in (("no active worker is consuming cronbeat.runs",
                                         workers),
                                        ("no active beat or dispatcher", tickers))
               if not found]
    lines = [f"not working: {gating}; {' and '.join(missing)}"]
    idle = sorted({row.deployment_id for row in live if row.role is not ProcessRole.ACTIVE},
                  key=lambda d: d or "")
    for deployment_id in idle:
        kinds = sorted({row.kind.value for row in live if row.deployment_id == deployment_id
                        and row.role is not ProcessRole.ACTIVE})
        line = (f"  deployment {deployment_id or '(unversioned)'}: {', '.join(kinds)} up,"
                f" running nothing")
        if active_deployment_id is not None:
            line += f"; {standby_advice(active_deployment_id, deployment_id)}"
        lines.append(line)
    if not live:
        lines.append("  no live Cronbeat process at all")
    return False, lines
