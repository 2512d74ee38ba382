"""A process's presence: its registry row and its role, kept current by one thread.

Every worker, dispatcher and beat process starts one :class:`Presence`. Its thread holds
one database connection of its own that ``LISTEN``\\ s on the deploy channel, and every
:data:`~app.deploys.processes.HEARTBEAT_INTERVAL_S` (or at once, when an activation or a reset
is notified) reads the scheduler state, computes the process's role
(:func:`app.deploys.deploy.role_of`) and writes its heartbeat row. The process reads
:attr:`Presence.role` (a plain attribute read, no I/O) to decide whether to consume or
tick; the deploy fence still guards every claim, so a role read a moment late can cost
a handed-back message, never a claim by the wrong deployment.

If the database cannot be reached, the last known role stays (the fence refuses claims
anyway while the database is down) and the thread reconnects with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable

from sqlalchemy import Connection, Engine, NullPool, create_engine, text

from app.config import Settings
from app.db import CONNECT_TIMEOUT_S, application_name
from app.deploys import deploy, deploy_report, processes
from app.enums import ProcessKind, ProcessRole

log = logging.getLogger(__name__)

#: Bounds every statement of the presence connection: a hung database must not hang
#: the heartbeat thread (and so the process's view of its role) for long.
STATEMENT_TIMEOUT_MS = 5000
#: Rows of dead processes are deleted at most this often by one process.
EXPIRE_EVERY_S = 60.0
_RETRY_MAX_S = processes.HEARTBEAT_INTERVAL_S

#: (consuming, problem) as the owning process sees itself; see :class:`Presence`.
StatusFn = Callable[[], tuple[bool | None, str | None]]


class Presence:
    """The registry row and role of this process.

    Args:
        settings: the process's settings (database URL, deployment id).
        kind: worker, dispatcher or beat.
        queues: the Cronbeat queues a worker consumes (empty for beat and loops).
        status: called on the heartbeat thread before each write; returns whether the
            process is consuming (None: it consumes nothing by design) and a problem
            that makes it unhealthy (None: none).
    """

    def __init__(self, settings: Settings, kind: ProcessKind,
                 queues: tuple[str, ...] = (), status: StatusFn | None = None) -> None:
        self.kind = kind
        self.queues = queues
        self.deployment_id = settings.deployment_id
        self._database_url = settings.database_url
        self._status = status
        self._id = uuid.uuid4()
        self._identity: processes.Identity | None = None
        #: None until the first successful read of the state.
        self._role: ProcessRole | None = None
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._next_expire = 0.0
        self._failures = 0

    @property
    def id(self) -> uuid.UUID:
        return self._id

    @property
    def role(self) -> ProcessRole | None:
        """The role as of the last read of the state; None before the first one."""
        return self._role

    @property
    def active(self) -> bool:
        return self._role is ProcessRole.ACTIVE

    def start(self) -> None:
        """Register (one try, synchronously, so the role is known), then keep it current."""
        try:
            self._cycle()
        except Exception as exc:  # the thread keeps trying
            self._failed(exc)
        self._thread = threading.Thread(target=self._run, name="cronbeat-presence", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Re-read the role and write the heartbeat now (from any thread)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def stop(self) -> None:
        """Stop the thread and delete this process's row (a clean shutdown)."""
        if self._thread is None:
            return  # never started
        self._stopping.set()
        self.wake()
        self._thread.join(timeout=processes.HEARTBEAT_INTERVAL_S + 1)
        if self._thread.is_alive():
            return  # stuck on the database: its row expires by itself
        try:
            conn = self._connection()
            processes.unregister(conn, self._id)
        except Exception as exc:  # the row expires by itself
            log.debug("presence: could not unregister (%s)", type(exc).__name__)
        self._close()
        if self._engine is not None:
            self._engine.dispose()

    # The thread.

    def _run(self) -> None:
        while not self._stopping.is_set():
            timeout = processes.HEARTBEAT_INTERVAL_S
            try:
                again = self._cycle()
                if again:
                    continue
            except Exception as exc:
                self._failed(exc)
                timeout = min(_RETRY_MAX_S, 0.5 * 2 ** min(self._failures, 4))
            self._wait(timeout)

    def _cycle(self) -> bool:
        """Read the role, write the heartbeat; returns whether a notification came meanwhile."""
        conn = self._connection()
        self._drain(conn)
        observation = deploy.observe(conn, self.deployment_id)
        if self._identity is None:
            self._identity = processes.Identity(
                id=self._id, deployment_id=self.deployment_id, kind=self.kind,
                hostname=socket.gethostname(), pid=os.getpid(), queues=self.queues,
                registered_generation=observation.generation,
            )
        role = deploy.role_of(observation, self.deployment_id,
                              self._identity.registered_generation)
        self._set_role(role, observation)
        consuming, problem = self._status() if self._status is not None else (None, None)
        processes.heartbeat(conn, self._identity, processes.Report(role, consuming, problem))
        now = time.monotonic()
        if now >= self._next_expire:
            self._next_expire = now + EXPIRE_EVERY_S
            processes.expire(conn)
        self._failures = 0
        return bool(self._raw(conn).notifies)

    def _set_role(self, role: ProcessRole, observation: deploy.Observation) -> None:
        previous, self._role = self._role, role
        if role is previous:
            return
        mine = self.deployment_id or "(unversioned)"
        active = observation.active_deployment_id
        extra = {"action": f"deploy.{role.value}", "deployment_id": self.deployment_id,
                 "active_deployment_id": active, "generation": observation.generation,
                 "kind": self.kind.value}
        if role is ProcessRole.ACTIVE:
            why = (f"deployment {mine} is the active one" if active is not None
                   else "no deployment is activated (gating is off)")
            log.warning("%s (generation %d): this %s takes work", why,
                        observation.generation, self.kind.value, extra=extra)
        elif role is ProcessRole.STANDBY and self.deployment_id is None and active:
            # Gating is on (a deployment was activated) and this process has no id: it
            # can never be activated as it is. Say so plainly, with commands that work.
            log.warning(
                "standby: this %s has no CRONBEAT_DEPLOYMENT_ID while deployment %s is "
                "active (generation %d), so it will run nothing: %s", self.kind.value,
                active, observation.generation,
                deploy_report.standby_advice(active, None), extra=extra)
        elif role is ProcessRole.STANDBY:
            log.warning(
                "standby: deployment %s is not activated (%s is, generation %d); this %s "
                "takes no work until `cronbeat deploy activate %s`", mine, active,
                observation.generation, self.kind.value, mine, extra=extra)
        else:
            log.warning(
                "superseded: deployment %s is superseded by %s (generation %d); this %s "
                "takes no more work and can be stopped", mine, active or "(gating off)",
                observation.generation, self.kind.value, extra=extra)

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._close()
        # The type only: driver messages can quote the URL.
        log.warning("presence: the database did not answer (%s); keeping role %s",
                    type(exc).__name__, self._role.value if self._role else "unknown",
                    extra={"action": "presence.unreachable"})

    def _wait(self, timeout: float) -> None:
        fds: list[int] = [self._wake_r]
        if self._conn is not None:
            fds.append(self._raw(self._conn).fileno())
        with contextlib.suppress(OSError, ValueError):
            readable, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)

    # The connection.

    def _connection(self) -> Connection:
        if self._conn is None:
            if self._engine is None:
                self._engine = create_engine(
                    self._database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                    connect_args={"connect_timeout": CONNECT_TIMEOUT_S,
                                  "application_name": application_name(),
                                  "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
                    hide_parameters=True,
                )
            conn = self._engine.connect()
            # The channel is a constant identifier, not a value (LISTEN takes no parameter).
            conn.execute(text(f"LISTEN {deploy.DEPLOY_CHANNEL}"))
            self._conn = conn
        return self._conn

    @staticmethod
    def _raw(conn: Connection) -> object:
        return conn.connection.dbapi_connection

    def _drain(self, conn: Connection) -> None:
        raw = self._raw(conn)
        raw.poll()  # type: ignore[attr-defined]
        raw.notifies.clear()  # type: ignore[attr-defined]

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
