"""``make run``'s files and probes: the Procfile, docker-compose.yml and the Makefile agree
with what the code starts, and the launcher refuses a taken port."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import yaml
from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_refuses_a_port_another_program_listens_on(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(CRONBEAT_DATA_DIR=str(tmp_path / "data"), PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", "devrun"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )
    assert result.returncode == 1
    assert result.stdout.strip().endswith(
        f"devrun | port {port} on 127.0.0.1 is already in use by another program; choose "
        f"another with PORT={port + 1} make run")
    assert "listening" not in result.stdout
    assert not (tmp_path / "data").exists(), "nothing may start on a taken port"


def test_the_health_probe_recognises_only_cronbeat_s_answer() -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from devrun.probes import health_status

    answers = iter([(200, b'{"status": "ok"}'), (200, b"<html>hello</html>"), (404, b"")])

    class Other(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = next(answers)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Other)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert [health_status(url) for _ in range(3)] == [200, 0, 404]
    finally:
        server.shutdown()


def procfile_commands() -> dict[str, str]:
    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def test_every_procfile_process_runs_the_same_line_in_docker_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, line in procfile_commands().items():
        assert name in services, f"Procfile process {name!r} has no compose service"
        shell, flag, script = services[name]["command"]
        # $$ is compose's escape for a literal $, left for the container's shell.
        assert (shell, flag, script.replace("$$", "$")) == ("sh", "-c", f"exec {line}")
        assert "healthcheck" in services[name], f"compose service {name!r} has no healthcheck"


def test_docker_compose_runs_migrations_before_the_processes_that_need_them() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in procfile_commands():
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
        assert depends_on["postgres"] == {"condition": "service_healthy"}
        assert depends_on["redis"] == {"condition": "service_healthy"}


def test_make_run_starts_web_worker_dispatcher_and_beat_and_flower_only_on_request() -> None:
    from devrun.plan import PROCESSES, plan_from_env

    assert set(PROCESSES) <= set(procfile_commands())
    assert plan_from_env({}).processes == ("web", "worker", "dispatcher", "beat")
    assert plan_from_env({"CRONBEAT_FLOWER": "1"}).processes[-1] == "flower"
    # Runs and ticks each have their own process (so no delivery can delay a tick), with
    # node names of their own, and between them they consume every queue the app uses
    # (the workers deliver alerts too, and run the alert watchdog).
    worker, dispatcher = procfile_commands()["worker"], procfile_commands()["dispatcher"]
    # Node names carry the deployment: Flower tells two deployments' workers apart.
    assert "-Q cronbeat.runs,cronbeat.alerts -n worker-${CRONBEAT_DEPLOYMENT_ID:-unversioned}@%h "\
        in worker
    # Two slots: a tick goes on while the history's maintenance runs in the other
    # (threads of one process: a prefork pool's two children cost 170 MiB more).
    assert ("-Q cronbeat.dispatch -n dispatcher-${CRONBEAT_DEPLOYMENT_ID:-unversioned}@%h"
            " -P threads --concurrency 2 ") in dispatcher
    assert shlex.split(procfile_commands()["web"])[-1] == "api.wsgi:app"


def test_the_first_install_shows_its_progress() -> None:
    makefile = (ROOT / "Makefile").read_text()
    install = next(line for line in makefile.splitlines()
                   if "pip install" in line and "constraints.txt" in line)
    assert "--quiet" not in install
    assert "make: installing Cronbeat and its pinned dependencies" in makefile


def test_the_standby_warning_names_the_commands_for_the_box_s_own_deployment(
    db: object, settings: object, engine: object,
) -> None:
    import dataclasses

    from sqlalchemy import text

    from devrun.standby import standby_warning

    env_file = ROOT / ".cronbeat" / "env"
    assert standby_warning(settings, env_file) == []  # gating off: nothing to say
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE scheduler_state SET active_deployment_id = 'v1'"))
    assert standby_warning(dataclasses.replace(settings, deployment_id="v1"), env_file) == []
    lines = standby_warning(dataclasses.replace(settings, deployment_id="v2"), env_file)
    script = Path(sys.executable).parent / "cronbeat"
    typed = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    cli = f"source .cronbeat/env && {typed}"
    assert lines == [
        "make run: NOTHING WILL RUN: deployment v1 is active, and these processes are"
        " deployment v2, so they wait as standbys.",
        "make run: to run them, in a second terminal in this folder:",
        f"make run:     {cli} deploy reset",
        "make run: (turns gating off: every process runs), or start again with the active"
        " deployment's id:",
        "make run:     CRONBEAT_DEPLOYMENT_ID=v1 make run",
        "make run: or make theirs the active one, once they are up:",
        f"make run:     {cli} deploy activate v2",
    ]
