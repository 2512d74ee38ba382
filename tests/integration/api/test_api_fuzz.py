"""Property-based fuzzing: the API driven from its own OpenAPI document.

Schemathesis generates requests from the served spec, both valid (positive) and invalid
(negative) ones, with a tenant's key (or the admin token on admin paths). Whatever it
sends, the answer must not be a 5xx and must match the spec: a documented status, the
documented content type and a body that validates against the documented schema.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from api.openapi import spec_dict
from app.config import Settings
from app.editing import manual, triggers
from tasks.celery_app import RUN_QUEUE
from tests.integration.api.conftest import ADMIN_TOKEN, mint_key

# 50 examples per operation and mode: enough to keep finding 5xx, and repeatable (derandomized);
# CRONBEAT_FUZZ_EXAMPLES=500 runs a deeper, random search locally.
EXAMPLES = int(os.environ.get("CRONBEAT_FUZZ_EXAMPLES", "50"))
DEEP = "CRONBEAT_FUZZ_EXAMPLES" in os.environ

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]


@pytest.fixture
def fuzzed_app(app: Flask, db: sessionmaker[Session], settings: Settings) -> Iterator[Flask]:
    yield app
    # Run-now messages of fuzzed triggers must not reach a worker of a later test.
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(RUN_QUEUE)
    client.close()


@pytest.fixture
def tenant_headers(db: sessionmaker[Session]) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_key(db, 'fuzz')}"}


def _aim_at_real_rows(case: schemathesis.Case, db: sessionmaker[Session]) -> None:
    """Point a well-formed trigger or invocation id at a row that exists.

    Random UUIDs only ever reach the 404 branch; a fresh trigger (and a pending
    invocation of it) per example lets the generated bodies exercise update, run,
    pause, preview and cancel for real. Malformed ids are left as generated.
    """
    params = case.path_parameters or {}
    if "trigger_id" not in params and "invocation_id" not in params:
        return
    try:
        uuid.UUID(str(params.get("trigger_id", params.get("invocation_id"))))
    except ValueError:
        return
    now = dt.datetime.now(dt.UTC)
    with db.begin() as session:
        trigger = triggers.create_trigger(
            session, "fuzz", "fuzz", {"name": f"t-{uuid.uuid4().hex}",
                                      "cron_expression": "*/5 * * * *",
                                      "target_kind": "webhook",
                                      "webhook_url": "https://example.com/hook"}, now=now)
        invocation = manual.run_now(session, "fuzz", "fuzz", trigger.id, now=now)
    params["project_id"] = "fuzz"
    if "trigger_id" in params:
        params["trigger_id"] = str(trigger.id)
    if "invocation_id" in params:
        params["invocation_id"] = str(invocation.id)


# The document the app serves; test_api_misc checks that it is byte-for-byte the one
# the code generates, and building it opens no connection.
# One test id for every generated case: pytest-xdist would run one of them (setup.cfg).
pytestmark = pytest.mark.serial

# Date-times across datetime's whole range, with the offsets ISO 8601 allows and
# PostgreSQL does not (beyond +-15:59): every one must be a 2xx or a 4xx naming its field.
_OFFSETS = st.sampled_from(["Z", "+00:00", "+05:45", "-09:30", "+14:00", "+15:59", "-15:59",
                            "+16:00", "-16:00", "+23:59", "-23:59"])
schemathesis.openapi.format("date-time", st.builds(
    lambda moment, offset: f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S") + offset,
    st.one_of(st.datetimes(), st.sampled_from([dt.datetime.min, dt.datetime.max])),
    _OFFSETS))

schema = schemathesis.openapi.from_dict(spec_dict())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES,
    deterministic=not DEEP,
)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not DEEP,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_or_break_its_spec(case, fuzzed_app, tenant_headers, db):
    _aim_at_real_rows(case, db)
    admin = case.path.startswith("/api/v1/admin")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if admin else tenant_headers
    # The ignored_auth probes go through the schema's app (without our credentials).
    case.operation.schema.app = fuzzed_app
    case.call_and_validate(headers=headers, checks=CHECKS, app=fuzzed_app)
