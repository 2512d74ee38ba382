"""What a target kind is: the columns it owns, how a definition of it is checked, how an
occurrence is delivered to it, and how the API shows it. One module per kind
(:mod:`app.targets.webhook`, :mod:`app.targets.task`); :func:`app.targets.target_of`
finds a kind's.

A new kind (an SQS queue, say) is one module here, its columns, a migration and its
schema fields; nothing else switches on the kind.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from app.config import Settings
from app.delivery.send import DeliveryResult, SendTask, SendWebhook
from app.enums import TargetKind


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One attempt's delivery, as a target sends it."""

    #: The trigger's target columns as of the claim (app.queries.attempt_sql.TargetRow).
    row: Any
    #: The body every kind carries: the occurrence's facts, the payload and the message.
    body: Mapping[str, Any]
    invocation_id: str
    #: When the attempt started (the signature's timestamp).
    started_at: Any
    settings: Settings
    send_task: SendTask
    send_webhook: SendWebhook


class Target(abc.ABC):
    """A target kind."""

    kind: ClassVar[TargetKind]
    #: The trigger columns this kind owns, with the values they have on a trigger of
    #: another kind (a definition's defaults).
    columns: ClassVar[Mapping[str, Any]]

    @abc.abstractmethod
    def check(self, row: dict[str, Any]) -> None:
        """Check a complete definition's target columns.

        Raises:
            InvalidTrigger: naming the field.
        """

    def prepare_save(self, row: dict[str, Any], old: Any, *, generate_secret: bool
                     ) -> str | None:
        """Complete ``row`` before it is saved over ``old`` (None: a new trigger); a
        secret generated for it, to show once (None if none was)."""
        return None

    @abc.abstractmethod
    def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Send one attempt.

        Raises:
            TransientError, PermanentError: the attempt failed, retryable or not.
        """

    @abc.abstractmethod
    def view(self, trigger: Any) -> dict[str, Any]:
        """The target as the API shows it, credentials redacted."""

    @abc.abstractmethod
    def columns_of(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The trigger's columns for a target as the API takes it (already checked by
        its schema); the other kinds' columns are cleared by the definition."""

    @abc.abstractmethod
    def describe(self, trigger: Any) -> str:
        """One line for people: where a run goes."""
