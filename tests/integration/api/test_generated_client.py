"""A client generated from openapi.json with openapi-python-client's defaults works: it
creates, PATCHes and syncs a trigger against a live web server on loopback."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.api.conftest import mint_key

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Any]:
    """The package openapi-python-client generates from the committed openapi.json."""
    bin_dir = Path(sys.executable).parent
    out = tmp_path / "client"
    subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path",
         str(ROOT / "openapi.json"), "--output-path", str(out)],
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        check=True, capture_output=True, timeout=300)
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("cronbeat_client")
    finally:
        sys.path.remove(str(out))
        for name in [name for name in sys.modules if name.startswith("cronbeat_client")]:
            del sys.modules[name]


def test_the_generated_client_creates_patches_and_syncs_a_trigger(
    generated: Any, live_url: str, db: sessionmaker[Session],
) -> None:
    from cronbeat_client.api.triggers import (
        patch_api_v1_projects_project_id_triggers_trigger_id as patch,
    )
    from cronbeat_client.api.triggers import post_api_v1_projects_project_id_triggers as post
    from cronbeat_client.api.triggers import put_api_v1_projects_project_id_triggers as put
    from cronbeat_client.models import (
        TaskTarget,
        TaskTargetKind,
        TriggerCreate,
        TriggerPatch,
        TriggerSync,
        WebhookTarget,
        WebhookTargetKind,
    )

    client = generated.AuthenticatedClient(base_url=live_url, token=mint_key(db, "acme"))
    hook = WebhookTarget(kind=WebhookTargetKind.WEBHOOK, url="https://example.com/hook")
    created = post.sync_detailed(project_id="gen", client=client, body=TriggerCreate(
        name="nightly", cron_expression="30 2 * * *", timezone="Europe/Berlin", target=hook))
    assert created.status_code == 201, created.content
    assert (created.parsed.name, created.parsed.cron_expression) == ("nightly", "30 2 * * *")

    patched = patch.sync_detailed(project_id="gen", trigger_id=created.parsed.id,
                                  client=client, body=TriggerPatch(interval_s=90),
                                  if_match='"1"')
    assert patched.status_code == 200, patched.content
    assert (patched.parsed.interval_s, patched.parsed.cron_expression,
            patched.parsed.version) == (90, None, 2)

    task = TaskTarget(kind=TaskTargetKind.TASK, task_name="reports.nightly", args=[2, 3])
    synced = put.sync_detailed(project_id="gen", client=client, body=TriggerSync(triggers=[
        TriggerCreate(name="nightly", interval_s=90, timezone="Europe/Berlin", target=hook),
        TriggerCreate(name="report", cron_expression="0 9 * * 1-5", target=task)]))
    assert synced.status_code == 200, synced.content
    assert (synced.parsed.created, synced.parsed.updated, synced.parsed.unchanged,
            synced.parsed.deleted) == (["report"], [], ["nightly"], [])
