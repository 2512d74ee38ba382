"""Activating a deployment (or turning gating off): the one atomic update, then a tick.

The tick is sent by ``kick``, which the caller passes in (the web process and the CLI
pass :func:`messaging.publisher.kick_tick` on their Celery app): this module knows no
broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from app.deploys import deploy
from app.deploys.deploy import Activation

log = logging.getLogger(__name__)

Kick = Callable[[], None]


def activate_deployment(
    sessions: sessionmaker[Session], kick: Kick, deployment_id: str, *, force: bool = False
) -> Activation:
    """Make ``deployment_id`` the active deployment and kick a dispatch tick.

    Returns:
        The generation in force and whether this call changed it.

    Raises:
        InvalidDeploymentId: the id is malformed; nothing was written.
        ActivationRefused: no live worker, or no live beat or dispatcher, of that id,
            and ``force`` is false; nothing was written.
    """
    with sessions.begin() as session:
        activation = deploy.activate(session, deployment_id, force=force)
    log.warning(
        "deployment %s is active (generation %d)", deployment_id, activation.generation,
        extra={"action": "deploy.activated", "deployment_id": deployment_id,
               "generation": activation.generation, "changed": activation.changed,
               "forced": force},
    )
    _kick(kick)
    return activation


def reset_deployments(sessions: sessionmaker[Session], kick: Kick) -> Activation:
    """Turn gating off (every process may run again) and kick a dispatch tick."""
    with sessions.begin() as session:
        activation = deploy.reset(session)
    log.warning(
        "deployment gating is off (generation %d)", activation.generation,
        extra={"action": "deploy.reset", "generation": activation.generation,
               "changed": activation.changed},
    )
    _kick(kick)
    return activation


def _kick(kick: Kick) -> None:
    # After commit: anything due runs now, on the active deployment's dispatcher. A lost
    # kick costs at most one tick interval; beat's next tick does the same.
    try:
        kick()
    except Exception as exc:
        log.warning("could not kick a dispatch tick (%s)", type(exc).__name__,
                    extra={"action": "deploy.kick_failed"})
