"""The ``cronbeat`` command line.

Commands come in groups (``cronbeat api-key create``, ``cronbeat openapi``). Adding one is
adding a function decorated with :func:`command_group` that registers its parser on the
``commands`` sub-parsers and sets ``handler`` — nothing else changes::

    @command_group
    def _dispatch_commands(commands: Commands) -> None:
        parser = commands.add_parser("dispatch", help="run the dispatcher")
        parser.add_argument("--once", action="store_true", help="one tick, then exit")
        parser.set_defaults(handler=_dispatch)

    def _dispatch(args: argparse.Namespace) -> int:
        ...  # return the exit status

Exit status: 0 done, 1 the operation failed (the message says why), 2 bad usage or
configuration; nothing is written in the last two cases. Settings are read from the
environment only by the handlers that need them. Secrets are never printed, except a
new API key, once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.errors import ConfigError, CronbeatError

Commands = Any  # argparse's sub-parsers action (its class is private)
Handler = Callable[[argparse.Namespace], int]

_GROUPS: list[Callable[[Commands], None]] = []


def command_group(register: Callable[[Commands], None]) -> Callable[[Commands], None]:
    """Register a function that adds a command (or a group of them) to the parser."""
    _GROUPS.append(register)
    return register


def _pattern(name: str, pattern: Any, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise argparse.ArgumentTypeError(f"{name} must be {what}")
        return value

    return check


def _sessions(settings: Settings) -> Any:
    from app.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings, pool_size=1))


@command_group
def _api_key_commands(commands: Commands) -> None:
    from app.editing.apikeys import KEY_NAME_PATTERN, TENANT_PATTERN

    group = commands.add_parser("api-key", help="create and revoke tenants' API keys")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    tenant = _pattern("--tenant", TENANT_PATTERN, "1-64 of A-Z a-z 0-9 . _ -")
    name = _pattern("--name", KEY_NAME_PATTERN, "1-200 of A-Z a-z 0-9 . _ -")
    for action, handler, help_text in (
        ("create", _api_key_create, "create a key and print it (shown only this once)"),
        ("revoke", _api_key_revoke, "revoke the tenant's key of that name"),
    ):
        parser = actions.add_parser(action, help=help_text)
        parser.add_argument("--tenant", required=True, type=tenant, help="tenant id")
        parser.add_argument("--name", required=True, type=name, help="the key's name")
        parser.set_defaults(handler=handler)


def _api_key_create(args: argparse.Namespace) -> int:
    from app.editing import apikeys

    settings = Settings.from_env()
    with _sessions(settings).begin() as session:
        created = apikeys.create_api_key(session, args.tenant, args.name)
        key_id = created.api_key.id
    # The key on stdout alone, so `KEY=$(cronbeat api-key create ...)` works; the rest
    # goes to stderr.
    print(created.key)
    print(f"created API key {args.name!r} ({key_id}) for tenant {args.tenant!r};"
          " store it now, it is not shown again", file=sys.stderr)
    return 0


def _api_key_revoke(args: argparse.Namespace) -> int:
    from app.editing import apikeys

    settings = Settings.from_env()
    with _sessions(settings).begin() as session:
        apikeys.revoke_api_key(session, args.tenant, args.name, now=dt.datetime.now(dt.UTC))
    print(f"revoked API key {args.name!r} of tenant {args.tenant!r}", file=sys.stderr)
    return 0


@command_group
def _openapi_commands(commands: Commands) -> None:
    parser = commands.add_parser(
        "openapi", help="print the API's OpenAPI document (cronbeat openapi > openapi.json)"
    )
    parser.set_defaults(handler=_openapi)


def _openapi(args: argparse.Namespace) -> int:
    from api.openapi import spec_text

    sys.stdout.write(spec_text())
    return 0


@command_group
def _dispatch_commands(commands: Commands) -> None:
    parser = commands.add_parser(
        "dispatch", help="run dispatcher ticks in this process (beside or instead of beat)"
    )
    parser.add_argument(
        "--once", action="store_true", help="run one tick, print what it did as JSON, exit"
    )
    parser.set_defaults(handler=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    import json
    import signal
    import time

    from sqlalchemy.exc import SQLAlchemyError

    # Importing the worker module configures the Celery app from the environment.
    import tasks.worker  # noqa: F401
    from app.deploys.deploy import Superseded
    from app.deploys.presence import Presence
    from app.enums import ProcessKind
    from tasks.runtime import get_runtime
    from tasks.ticks import run_tick

    if args.once:
        print(json.dumps(run_tick()))
        return 0
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    settings = get_runtime().settings
    tick_s = settings.tick_seconds
    # Like beat: registered, and ticking only while its deployment is the active one
    # (a standby or superseded loop stays up and starts when its deployment is
    # activated; the presence thread logs each change).
    presence = Presence(settings, ProcessKind.DISPATCHER)
    presence.start()
    try:
        while not stopping:
            if presence.active:
                try:
                    print(json.dumps(run_tick()), flush=True)
                except Superseded:
                    presence.wake()  # activated elsewhere a moment ago: the role follows
                except (CronbeatError, SQLAlchemyError) as exc:
                    # A broker or database blip fails this tick, not the process: what
                    # it committed is safe, and the next tick's sweep repairs what it left.
                    print(f"cronbeat: tick failed ({type(exc).__name__}); next tick as usual",
                          file=sys.stderr, flush=True)
                # Sleep to the next tick boundary (the minute, by default), as beat would.
                deadline = time.time() // tick_s * tick_s + tick_s
            else:
                deadline = time.time() + 1.0
            while not stopping and time.time() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.time())))
                if not presence.active and deadline - time.time() > 1.0:
                    break
    finally:
        presence.stop()
    return 0


@command_group
def _deploy_commands(commands: Commands) -> None:
    from app.deploys.deploy import DEPLOYMENT_ID_PATTERN, DEPLOYMENT_ID_RULE

    group = commands.add_parser("deploy", help="deployments: which code's processes run")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    parser = actions.add_parser(
        "activate",
        help="make DEPLOYMENT_ID the only active deployment (idempotent) and kick a tick",
    )
    parser.add_argument(
        "deployment_id",
        metavar="DEPLOYMENT_ID",
        type=_pattern("DEPLOYMENT_ID", DEPLOYMENT_ID_PATTERN, DEPLOYMENT_ID_RULE),
        help="e.g. the git SHA",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="activate even with no live worker, beat or dispatcher of that id",
    )
    parser.set_defaults(handler=_deploy_activate)
    reset = actions.add_parser(
        "reset", help="turn gating off: every process runs again, whatever its deployment"
    )
    reset.set_defaults(handler=_deploy_reset)
    status = actions.add_parser(
        "status", help="the active deployment and the live processes of each deployment"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_deploy_status)


def _activation_json(activation: Any) -> str:
    import json

    return json.dumps({"deployment_id": activation.deployment_id,
                       "generation": activation.generation, "changed": activation.changed})


def _deploy_activate(args: argparse.Namespace) -> int:
    import tasks.worker  # noqa: F401 - configures the Celery app from the environment
    from app.deploys.deploying import activate_deployment
    from messaging.publisher import kick_tick
    from tasks.celery_app import celery_app
    from tasks.runtime import get_runtime

    activation = activate_deployment(
        get_runtime().sessions, lambda: kick_tick(celery_app), args.deployment_id,
        force=args.force,
    )
    print(_activation_json(activation))
    return 0


def _deploy_reset(args: argparse.Namespace) -> int:
    import tasks.worker  # noqa: F401 - configures the Celery app from the environment
    from app.deploys.deploying import reset_deployments
    from messaging.publisher import kick_tick
    from tasks.celery_app import celery_app
    from tasks.runtime import get_runtime

    print(_activation_json(reset_deployments(get_runtime().sessions,
                                             lambda: kick_tick(celery_app))))
    return 0


def _deploy_status(args: argparse.Namespace) -> int:
    import json

    from app.deploys import deploy
    from app.deploys.deploy_report import status_json, status_text

    settings = Settings.from_env()
    with _sessions(settings).begin() as session:
        status = deploy.status(session)
    print(json.dumps(status_json(status), indent=2) if args.json else status_text(status))
    return 0


@command_group
def _health_commands(commands: Commands) -> None:
    from app.enums import ProcessKind

    parser = commands.add_parser(
        "health",
        help="exit 0 if this host's KIND process is healthy, 1 (with the reason) if not;"
             " `health fleet`: exit 0 if the fleet runs anything (an active worker and an"
             " active beat or dispatcher), 1 if not (a fleet of standbys, say)",
    )
    parser.add_argument("kind", metavar="KIND",
                        choices=[*(k.value for k in ProcessKind), "fleet"],
                        help="worker, dispatcher, beat, or fleet")
    parser.add_argument("--pid", type=int, help="only the process with this pid")
    parser.set_defaults(handler=_health)


def _health(args: argparse.Namespace) -> int:
    import socket

    from app.deploys import processes
    from app.deploys.deploy_report import health_verdict

    settings = Settings.from_env()
    hostname = socket.gethostname()
    if args.kind == "fleet":
        return _fleet_health(settings)
    with _sessions(settings).begin() as session:
        rows = [row for row in processes.live(session, include_dead=True)
                if row.hostname == hostname[:255] and row.kind.value == args.kind
                and (args.pid is None or row.pid == args.pid)]
    healthy, lines = health_verdict(rows, args.kind, hostname)
    print("\n".join(lines), file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _fleet_health(settings: Settings) -> int:
    from app.deploys import deploy, processes
    from app.deploys.deploy_report import fleet_verdict

    with _sessions(settings).begin() as session:
        state = deploy.read_state(session)
        rows = processes.live(session)
    working, lines = fleet_verdict(state.active_deployment_id, rows)
    print("\n".join(lines), file=sys.stdout if working else sys.stderr)
    return 0 if working else 1


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every registered command group."""
    parser = argparse.ArgumentParser(
        prog="cronbeat", description="Cronbeat: scheduled triggers, fired exactly once."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _GROUPS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits 2 on bad usage)."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"cronbeat: {exc.message}", file=sys.stderr)
        return 2
    except CronbeatError as exc:
        print(f"cronbeat: {exc.message}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        # The driver's message may quote the URL or parameters; the class is enough.
        print(f"cronbeat: the database at DATABASE_URL failed ({type(exc.orig).__name__}); "
              "is it running and reachable? For the servers `make run` started, run "
              "`source .cronbeat/env` first.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())


# Command groups of their own modules register themselves when imported.
from cli import beat_import, code_sync  # noqa: E402, F401
