"""What ``make run`` prints first when the processes it starts will run nothing: their
deployment is not the active one."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from app.config import Settings
from app.db import make_engine, make_session_factory
from app.deploys import deploy
from devrun.plan import ROOT


def _as_typed(path: Path) -> str:
    """``path`` as a user types it in this repository's folder (relative when inside)."""
    try:
        return shlex.quote(str(path.relative_to(ROOT)))
    except ValueError:
        return shlex.quote(str(path))


def standby_warning(settings: Settings, env_file: Path) -> list[str]:
    """What to print first when the processes about to start will run nothing: a
    deployment was activated (gating is on) and theirs is not it. Empty otherwise.

    The commands it prints work as printed, from this folder in a second terminal.
    """
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        with make_session_factory(engine).begin() as session:
            active = deploy.read_state(session).active_deployment_id
    finally:
        engine.dispose()
    mine = settings.deployment_id
    if active is None or active == mine:
        return []
    if mine is None:
        why = (f"deployment {active} is active (a deploy activated it), and these processes"
               f" have no CRONBEAT_DEPLOYMENT_ID")
    else:
        why = f"deployment {active} is active, and these processes are deployment {mine}"
    cli = (f"source {_as_typed(env_file)} && "
           f"{_as_typed(Path(sys.executable).parent / 'cronbeat')}")
    lines = [
        f"make run: NOTHING WILL RUN: {why}, so they wait as standbys.",
        "make run: to run them, in a second terminal in this folder:",
        f"make run:     {cli} deploy reset",
        "make run: (turns gating off: every process runs), or start again with the active"
        " deployment's id:",
        f"make run:     CRONBEAT_DEPLOYMENT_ID={shlex.quote(active)} make run",
    ]
    if mine is not None:
        lines += ["make run: or make theirs the active one, once they are up:",
                  f"make run:     {cli} deploy activate {shlex.quote(mine)}"]
    return lines
