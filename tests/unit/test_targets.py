"""Target kinds (app.targets): each kind's checks, save rule, view and columns."""

from __future__ import annotations

import types

import pytest

from app.enums import TargetKind
from app.errors import InvalidTrigger
from app.targets import all_columns, target_of
from app.targets.webhook import REDACTED


def test_each_kind_owns_its_columns_and_all_of_them_are_known() -> None:
    assert target_of("webhook").columns == {
        "webhook_url": None, "webhook_method": "POST", "webhook_headers": {},
        "signing_secret": None}
    assert target_of(TargetKind.TASK).columns == {
        "task_name": None, "task_queue": None, "task_args": None, "task_kwargs": None,
        "task_envelope": False, "task_outcome": False}
    assert set(all_columns()) == {"webhook_url", "webhook_method", "webhook_headers",
                                  "signing_secret", "task_name", "task_queue", "task_args",
                                  "task_kwargs", "task_envelope", "task_outcome"}


def test_an_incomplete_target_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidTrigger, match="a webhook target needs a url") as caught:
        target_of("webhook").check({"webhook_url": ""})
    assert caught.value.field == "target"
    task = {"task_name": "a.b", "task_args": None, "task_kwargs": None,
            "task_envelope": None}
    with pytest.raises(InvalidTrigger, match="a task target needs a task_name"):
        target_of("task").check({**task, "task_name": None})
    with pytest.raises(InvalidTrigger, match="args must be a JSON array"):
        target_of("task").check({**task, "task_args": {"x": 1}})
    with pytest.raises(InvalidTrigger, match="kwargs must be a JSON object"):
        target_of("task").check({**task, "task_kwargs": [1]})
    with pytest.raises(InvalidTrigger, match="with the envelope takes no args or kwargs"):
        target_of("task").check({**task, "task_envelope": True, "task_args": [1]})


def test_a_webhook_keeps_its_signing_secret_across_saves_and_gets_one_when_new() -> None:
    webhook = target_of("webhook")
    old = types.SimpleNamespace(target_kind=TargetKind.WEBHOOK, signing_secret="whsec_old")
    row = {"signing_secret": None}
    assert webhook.prepare_save(row, old, generate_secret=True) is None
    assert row["signing_secret"] == "whsec_old"
    new = {"signing_secret": None}
    generated = webhook.prepare_save(new, None, generate_secret=True)
    assert generated is not None and generated.startswith("whsec_")
    assert new["signing_secret"] == generated
    dry = {"signing_secret": None}
    assert webhook.prepare_save(dry, None, generate_secret=False) is None
    assert dry["signing_secret"] is None



def test_a_task_trigger_keeps_how_it_is_called_unless_arguments_are_given() -> None:
    task = target_of("task")
    enveloped = types.SimpleNamespace(target_kind=TargetKind.TASK, task_envelope=True)
    webhook = types.SimpleNamespace(target_kind=TargetKind.WEBHOOK, task_envelope=False)
    cases = [
        (enveloped, {}, True),  # saved before arguments existed: keeps its envelope
        (enveloped, {"task_args": [1]}, False),  # arguments given: called with them
        (enveloped, {"task_envelope": False}, False),
        (webhook, {}, False),  # a new task target takes its arguments
        (None, {}, False),
        (None, {"task_envelope": True}, True),
    ]
    for old, given, expected in cases:
        row = {"task_args": None, "task_kwargs": None, "task_envelope": None, **given}
        assert task.prepare_save(row, old, generate_secret=True) is None
        assert row["task_envelope"] is expected, (old, given)


def test_the_view_redacts_credentials_and_the_columns_round_trip() -> None:
    trigger = types.SimpleNamespace(
        webhook_url="https://user:token@example.com/hook", webhook_method="PUT",
        webhook_headers={"Authorization": "Bearer x"}, signing_secret="whsec_x",
        task_name="reports.send", task_queue=None, task_args=[1, "x"],
        task_kwargs={"scale": 2}, task_envelope=False, task_outcome=True)
    assert target_of("webhook").view(trigger) == {
        "kind": "webhook", "url": f"https://user:{REDACTED}@example.com/hook",
        "method": "PUT", "headers": {"Authorization": REDACTED}, "has_signing_secret": True}
    assert target_of("webhook").describe(trigger) == (
        f"PUT https://user:{REDACTED}@example.com/hook")
    assert target_of("task").view(trigger) == {
        "kind": "task", "task_name": "reports.send", "queue": None, "args": [1, "x"],
        "kwargs": {"scale": 2}, "envelope": False, "outcome": True}
    assert target_of("task").describe(trigger) == "task reports.send on celery"
    assert target_of("task").columns_of({"task_name": "a.b", "queue": "q"}) == {
        "target_kind": "task", "task_name": "a.b", "task_queue": "q", "task_args": None,
        "task_kwargs": None, "task_envelope": None, "task_outcome": False}
    assert target_of("webhook").columns_of(
        {"url": "https://e.com", "method": "POST", "headers": {}}) == {
        "target_kind": "webhook", "webhook_url": "https://e.com", "webhook_method": "POST",
        "webhook_headers": {}}
