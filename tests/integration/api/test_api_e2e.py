"""End to end: run-now through the API, a real worker, a real webhook receiver."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.api.conftest import Caller
from tests.support.receiver import Receiver
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.slow
DEADLINE_S = 20.0


def test_run_now_on_a_webhook_trigger_ends_succeeded(
    api: Caller, celery_worker: WorkerProcess, receiver: Receiver,
):
    trigger = api.create(target={"kind": "webhook", "url": receiver.url("/nightly")},
                         payload={"report": "daily"})
    run = api.post(f"/triggers/{trigger['id']}/run")
    assert run.status_code == 202

    deadline = time.monotonic() + DEADLINE_S
    invocation = api.get(f"/invocations/{run.json['id']}").json
    while invocation["status"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        invocation = api.get(f"/invocations/{run.json['id']}").json

    assert invocation["status"] == "succeeded", invocation
    assert invocation["manual"] is True and invocation["response_status"] == 200
    assert [(a["number"], a["outcome"]) for a in invocation["attempts"]] == [(1, "succeeded")]
    [request] = receiver.requests
    assert request.path == "/nightly"
    # The secret shown once at creation verifies the delivery.
    body = Webhook(trigger["signing_secret"]).verify(request.body, request.headers)
    assert body["invocation"] == run.json["id"] and body["payload"] == {"report": "daily"}
    history = api.get(f"/triggers/{trigger['id']}/invocations").json["items"]
    assert [item["status"] for item in history] == ["succeeded"]
    assert api.get(f"/triggers/{trigger['id']}").json["last_invocation"]["status"] == "succeeded"
