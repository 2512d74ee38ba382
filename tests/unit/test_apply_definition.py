"""Saving a definition: the one rule PATCH and sync share
(app.editing.definitions.apply_definition)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from app.editing.definitions import DEFAULTS, EDITABLE, apply_definition, complete_definition
from app.models import Trigger

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=UTC)
FIRED_AT = dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _stored(*, next_run_at: dt.datetime | None = None,
            last_scheduled_for: dt.datetime | None = None, **values: object) -> Trigger:
    row = complete_definition({"name": "t", "webhook_url": "https://example.com/h",
                               "signing_secret": "whsec_" + "A" * 32, **values})
    return Trigger(id=uuid.uuid4(), tenant_id="t1", project_id="p1", **row,
                   next_run_at=next_run_at, last_scheduled_for=last_scheduled_for)


def _definition(trigger: Trigger, **changes: object) -> dict[str, object]:
    return {**{column: getattr(trigger, column) for column in EDITABLE}, **changes}


def _fired_one_time() -> Trigger:
    # What the dispatcher leaves once a one-time trigger fired.
    return _stored(run_at=FIRED_AT, enabled=False, next_run_at=None,
                   last_scheduled_for=FIRED_AT)


@pytest.mark.parametrize("declarative", [True, False], ids=["sync", "patch"])
def test_disabling_an_enabled_trigger_stops_its_runs(declarative: bool) -> None:
    old = _stored(cron_expression="0 * * * *", next_run_at=NOW + dt.timedelta(hours=1))
    applied = apply_definition(old, _definition(old, enabled=False), now=NOW,
                               explicit_enabled=False, declarative=declarative)
    assert (applied.changed, applied.stop_runs, applied.next_run_at) == (True, True, None)


@pytest.mark.parametrize("declarative", [True, False], ids=["sync", "patch"])
def test_saying_enabled_false_to_a_fired_one_time_trigger_stops_its_retries(
    declarative: bool,
) -> None:
    old = _fired_one_time()
    applied = apply_definition(old, _definition(old, enabled=False), now=NOW,
                               explicit_enabled=False, declarative=declarative)
    assert (applied.changed, applied.stop_runs) == (False, True)


def test_a_sync_re_applying_a_fired_one_time_trigger_leaves_it_finished() -> None:
    old = _fired_one_time()
    for explicit in (None, True):
        applied = apply_definition(old, _definition(old, enabled=True), now=NOW,
                                   explicit_enabled=explicit, declarative=True)
        assert (applied.changed, applied.stop_runs, applied.row["enabled"]) == (
            False, False, False)


def test_a_patch_resuming_a_fired_one_time_trigger_is_told_its_run_at_is_past() -> None:
    from app.errors import InvalidTrigger

    old = _fired_one_time()
    with pytest.raises(InvalidTrigger, match="must be in the future"):
        apply_definition(old, _definition(old, enabled=True), now=NOW,
                         explicit_enabled=True, declarative=False)


def test_a_webhook_keeps_its_secret_or_gets_one_unless_it_is_a_dry_run() -> None:
    old = _stored(cron_expression="0 * * * *", next_run_at=NOW + dt.timedelta(hours=1))
    kept = apply_definition(old, _definition(old, signing_secret=None, description="x"),
                            now=NOW, explicit_enabled=None, declarative=True)
    assert (kept.row["signing_secret"], kept.generated_secret) == (old.signing_secret, None)
    new = {**DEFAULTS, "name": "n", "cron_expression": "0 * * * *",
           "webhook_url": "https://example.com/h"}
    fresh = apply_definition(None, new, now=NOW, explicit_enabled=None, declarative=True)
    assert fresh.generated_secret is not None
    assert fresh.row["signing_secret"] == fresh.generated_secret
    dry = apply_definition(None, new, now=NOW, explicit_enabled=None, declarative=True,
                           generate_secret=False)
    assert (dry.generated_secret, dry.row["signing_secret"]) == (None, None)
