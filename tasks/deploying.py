"""Activating a deployment: the one atomic update, then an immediate tick."""

from __future__ import annotations

import logging
import re

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.deploy import Activation, activate
from app.errors import PermanentError
from tasks.celery_app import DISPATCH_QUEUE, DISPATCH_TASK

log = logging.getLogger(__name__)

DEPLOYMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}")


class InvalidDeploymentId(PermanentError):
    """The deployment id must be 1-100 of A-Z a-z 0-9 . _ : + - (a git SHA, a tag)."""


def activate_deployment(
    sessions: sessionmaker[Session], app: Celery, deployment_id: str
) -> Activation:
    """Make ``deployment_id`` the active deployment and kick a dispatch tick.

    Returns:
        The generation in force and whether this call changed it.

    Raises:
        InvalidDeploymentId: the id is malformed; nothing was written.
    """
    if not isinstance(deployment_id, str) or not DEPLOYMENT_ID_PATTERN.fullmatch(deployment_id):
        raise InvalidDeploymentId()
    with sessions.begin() as session:
        activation = activate(session, deployment_id)
    log.warning(
        "deployment %s is active (generation %d)", deployment_id, activation.generation,
        extra={"action": "deploy.activated", "deployment_id": deployment_id,
               "generation": activation.generation, "changed": activation.changed},
    )
    # After commit: anything due runs now, on the new deployment's workers. A lost kick
    # costs at most one tick interval; beat's next tick does the same.
    try:
        app.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE)
    except Exception as exc:
        log.warning("could not kick a dispatch tick (%s)", type(exc).__name__,
                    extra={"action": "deploy.kick_failed"})
    return activation
