"""One tenant's hanging targets hold at most its cap of worker threads; others go on.

A real worker with two delivery threads, CRONBEAT_TENANT_MAX_RUNNING=1, a loopback server that
accepts and never answers (tenant A's two targets) and a prompt receiver (tenant B's).
Without the cap, A's two runs would hold both threads for their whole timeout_s and B's
run would wait behind them.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.enums import InvocationStatus
from app.models import Invocation
from messaging.publisher import publish_runs
from tests.integration.test_run_deadlines import mute_server
from tests.support.receiver import Receiver
from tests.support.runs import add_invocation, add_trigger, load, wait_final

pytestmark = pytest.mark.slow

HANG_TIMEOUT_S = 30


def test_a_tenant_s_hanging_targets_do_not_hold_another_tenant_s_run(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    worker = start_worker(concurrency=2, CRONBEAT_TENANT_MAX_RUNNING="1",
                          CRONBEAT_RUN_CONCURRENCY="2")
    with mute_server() as port:
        hanging = [
            add_invocation(db, add_trigger(db, tenant_id="tenant-a",
                                           webhook_url=f"http://127.0.0.1:{port}/hook",
                                           timeout_s=HANG_TIMEOUT_S), tenant_id="tenant-a")
            for _ in range(2)
        ]
        other = add_invocation(db, add_trigger(db, receiver, tenant_id="tenant-b"),
                               tenant_id="tenant-b")
        publish_runs(celery_client, [*hanging, other])

        done = wait_final(db, other)
        assert done.status == InvocationStatus.SUCCEEDED
        # B's run finished while A's targets still hang: one of them runs (the cap),
        # the other waits pending, put off until a thread of A's is free.
        statuses = sorted(load(db, i).status.value for i in hanging)
        assert statuses == ["pending", "running"]
        with db.begin() as session:
            running_a = session.scalar(select(func.count()).where(
                Invocation.tenant_id == "tenant-a",
                Invocation.status == InvocationStatus.RUNNING))
        assert running_a == 1
        assert receiver.count == 1
        assert "run: the tenant is at its cap, waiting" in worker.log_text()
