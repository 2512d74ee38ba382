"""Targets: the operator's task queues, headers and URLs delivery can send, and what reads
show of a webhook's credentials."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Trigger
from tests.integration.api.conftest import Caller, assert_error, operator_queues, trigger_body

HOOK = "https://example.com/hook"


def _task(**fields: object) -> dict[str, object]:
    return {"kind": "task", "task_name": "reports.nightly", **fields}


def _count(db: sessionmaker[Session]) -> int:
    with db.begin() as session:
        return session.scalar(select(func.count()).select_from(Trigger))


def test_a_task_queue_the_operator_did_not_allow_is_a_422_naming_target_queue(
    api: Caller, db: sessionmaker[Session],
):
    # The suite's operator allows "celery" and "reports" (conftest.TASK_QUEUES).
    refused = api.post("/triggers", json=trigger_body(target=_task(queue="elsewhere")))
    body = assert_error(refused, 422, "target.queue")
    assert "reports" not in refused.get_data(as_text=True), body
    assert _count(db) == 0
    allowed = api.create(target=_task(queue="reports"))
    assert allowed["target"]["queue"] == "reports"
    path = f"/triggers/{allowed['id']}"
    assert_error(api.patch(path, json={"target": _task(queue="elsewhere")}), 422,
                 "target.queue")
    assert api.get(path).json["target"]["queue"] == "reports"
    synced = api.put("/triggers", json={"triggers": [
        trigger_body(name="nightly", target=_task(queue="reports")),
        trigger_body(name="other", target=_task(queue="elsewhere"))]})
    assert_error(synced, 422, "triggers.other.target.queue")
    assert _count(db) == 1


def test_a_task_target_without_a_queue_needs_the_operator_to_allow_celery(
    app: Flask, api: Caller, db: sessionmaker[Session],
):
    # No queue means Celery's default queue "celery" (app.delivery.send.DEFAULT_TASK_QUEUE).
    assert api.create(name="default", target=_task())["target"]["queue"] is None
    with operator_queues(app, "reports"):
        for target in (_task(), _task(queue=None)):
            assert_error(api.post("/triggers", json=trigger_body(target=target)), 422,
                         "target.queue")
        assert api.create(name="named", target=_task(queue="reports"))["target"]["queue"] \
            == "reports"
    assert _count(db) == 2


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"headers": {"X-Euro": "€"}}, "target.headers.X-Euro"),
        ({"headers": {"X-Lead": " lead"}}, "target.headers.X-Lead"),
        ({"headers": {"X-Trail": "trail "}}, "target.headers.X-Trail"),
        ({"headers": {"X-Tab": "a\tb"}}, "target.headers.X-Tab"),
        ({"headers": {"X-Del": "a\x7fb"}}, "target.headers.X-Del"),
        ({"headers": {"X-C1": "a\x85b"}}, "target.headers.X-C1"),
        ({"headers": {"X-Copied": "<redacted>"}}, "target.headers.X-Copied"),
        ({"headers": {"Content-Type": "text/plain"}}, "target.headers.Content-Type"),
        ({"headers": {"user-agent": "mine"}}, "target.headers.user-agent"),
        ({"headers": {"Webhook-Signature": "v1,x"}}, "target.headers.Webhook-Signature"),
        ({"headers": {"Proxy-Authorization": "x"}}, "target.headers.Proxy-Authorization"),
        ({"url": "http://h.example:99999/"}, "target.url"),
        ({"url": "http://h.example:0/"}, "target.url"),
    ],
)
def test_a_header_or_url_delivery_cannot_send_is_a_422_naming_it(
    api: Caller, db: sessionmaker[Session], target: dict[str, object], field: str,
):
    response = api.post("/triggers", json=trigger_body(target={"kind": "webhook", "url": HOOK,
                                                               **target}))
    assert_error(response, 422, field)
    assert _count(db) == 0


def test_headers_delivery_can_send_are_accepted(api: Caller):
    headers = {"Authorization": "Bearer t0k", "X-Latin": "café", "X-Empty": "",
               "X-Inner": "a b"}
    created = api.create(target={"kind": "webhook", "url": "http://h.example:8080/x",
                                 "headers": headers})
    assert set(created["target"]["headers"]) == set(headers)


def test_reads_redact_header_values_and_the_url_password(api: Caller, db: sessionmaker[Session]):
    target = {"kind": "webhook", "url": "https://bot:s3cr3t@hooks.example:8443/in?x=1",
              "headers": {"Authorization": "Bearer t0k3n", "X-Team": "ops"}}
    created = api.post("/triggers", json=trigger_body(target=target))
    assert created.status_code == 201
    listed = api.get("/triggers").json["items"][0]
    read = api.get(f"/triggers/{created.json['id']}").json
    synced = api.put("/triggers", json={"triggers": [trigger_body(target=target)]})
    assert synced.json["unchanged"] == ["nightly"]
    paused = api.post(f"/triggers/{created.json['id']}/pause").json
    for view in (created.json, listed, read, paused):
        assert view["target"]["url"] == "https://bot:<redacted>@hooks.example:8443/in?x=1"
        assert view["target"]["headers"] == {"Authorization": "<redacted>",
                                             "X-Team": "<redacted>"}
    for response in (created, api.get("/triggers"), synced):
        text = response.get_data(as_text=True)
        assert "t0k3n" not in text and "s3cr3t" not in text
    assert created.json["signing_secret"].startswith("whsec_")
    with db.begin() as session:
        stored = session.scalars(select(Trigger)).one()
        assert stored.webhook_url == target["url"]
        assert stored.webhook_headers == target["headers"]


@pytest.mark.parametrize("url", ["example.com/hook", "ftp://example.com/hook",
                                 "//example.com/hook"])
def test_a_url_without_an_http_scheme_is_told_exactly_that(
    api: Caller, db: sessionmaker[Session], url: str,
):
    response = api.post("/triggers", json=trigger_body(target={"kind": "webhook", "url": url}))
    body = assert_error(response, 422, "target")
    assert body["errors"]["target"] == {"url": ["must start with http:// or https://"]}
    assert _count(db) == 0
    channel = api.post("/alerts/channels", json={"name": "ops", "url": url})
    assert assert_error(channel, 422, "url")["errors"]["url"] == [
        "must start with http:// or https://"]


def test_a_task_target_takes_its_args_and_kwargs_or_asks_for_the_envelope(
    api: Caller, db: sessionmaker[Session],
):
    created = api.create(target=_task(args=[2, "x", {"deep": [1]}], kwargs={"scale": 10}))
    assert created["target"] == {"kind": "task", "task_name": "reports.nightly",
                                 "queue": None, "args": [2, "x", {"deep": [1]}],
                                 "kwargs": {"scale": 10}, "envelope": False,
                                 "outcome": False}
    plain = api.create(name="plain", target=_task())
    assert (plain["target"]["args"], plain["target"]["kwargs"],
            plain["target"]["envelope"]) == ([], {}, False)
    enveloped = api.create(name="enveloped", target=_task(envelope=True))
    path = f"/triggers/{enveloped['id']}"
    # A target given again without `envelope` keeps it; given arguments, it takes them.
    kept = api.patch(path, json={"target": _task(queue="reports")}).json
    assert (kept["target"]["envelope"], kept["target"]["queue"]) == (True, "reports")
    switched = api.patch(path, json={"target": _task(args=[1])}).json["target"]
    assert (switched["envelope"], switched["args"]) == (False, [1])
    count = _count(db)
    for target, fields in [
        (_task(envelope=True, args=[1]), ("target.args",)),
        (_task(envelope=True, kwargs={"a": 1}), ("target.kwargs",)),
        (_task(args={"a": 1}), ("target.args",)),
        (_task(kwargs=[1]), ("target.kwargs",)),
        (_task(args=None), ("target.args",)),
        (_task(args=["x" * 70_000]), ("target.args",)),
    ]:
        answer = assert_error(api.post("/triggers", json=trigger_body(name="bad", target=target)),
                              422, *fields)
        assert "bad" not in str(answer["errors"])
    assert _count(db) == count
