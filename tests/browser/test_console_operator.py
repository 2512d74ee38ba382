"""What an operator reads and does in the console, in a real headless Chromium: each run's
origin, lateness and duration; a run's own page; the payload; one-time triggers due and
done; sorting and actions on the list; a refused action's error on the page."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from flask import Flask
from selenium.webdriver.common.by import By
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation, InvocationAttempt, Trigger
from tests.browser.console_support import api_key, click, create_trigger, loaded, sign_in
from tests.support.runs import T0

pytestmark = pytest.mark.slow
S = dt.timedelta(seconds=1)
HOOK = {"kind": "webhook", "url": "https://example.com/hook",
        "headers": {"Authorization": "Bearer not-for-your-eyes"}}


def _run(session: Session, trigger_id: uuid.UUID, scheduled_for: dt.datetime,
         attempts: list[dict[str, Any]], **values: Any) -> uuid.UUID:
    """One invocation of project ``ops`` of tenant ``acme`` with its attempts, as stored."""
    invocation_id = session.execute(insert(Invocation).values(
        trigger_id=trigger_id, tenant_id="acme", project_id="ops",
        scheduled_for=scheduled_for, attempt=len(attempts), **values,
    ).returning(Invocation.id)).scalar_one()
    for number, attempt in enumerate(attempts, start=1):
        session.execute(insert(InvocationAttempt).values(
            invocation_id=invocation_id, scheduled_for=scheduled_for, number=number,
            **attempt))
    return invocation_id


def _cells(browser: Any, table: str, row: str, cells: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [tuple(r.find_element(By.CSS_SELECTOR, c).text for c in cells)
            for r in browser.find_elements(By.CSS_SELECTOR, f"#{table} {row}")]


def test_history_shows_each_run_s_origin_lateness_duration_and_attempts_and_a_run_its_page(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    trigger = create_trigger(web_app, key, name="billing", target=HOOK,
                             payload={"report": "daily", "rows": [1, 2]})
    trigger_id = uuid.UUID(trigger["id"])
    with db.begin() as session:
        scheduled = _run(session, trigger_id, T0, [
            {"started_at": T0 + 1.5 * S, "finished_at": T0 + 2 * S, "outcome": "succeeded",
             "response_status": 200, "deployment_id": "d-7"}],
            status=InvocationStatus.SUCCEEDED, started_at=T0 + 1.5 * S,
            finished_at=T0 + 2 * S, response_status=200, response_excerpt="ok",
            deployment_id="d-7")
        asked = T0 + dt.timedelta(minutes=10)
        manual = _run(session, trigger_id, asked, [
            {"started_at": asked + 0.25 * S, "finished_at": asked + 0.75 * S,
             "outcome": "error", "response_status": 503, "error": "HTTP 503: busy",
             "deployment_id": "d-7"},
            {"started_at": asked + 2.25 * S, "finished_at": asked + 2.75 * S,
             "outcome": "succeeded", "response_status": 200, "deployment_id": "d-8"}],
            status=InvocationStatus.SUCCEEDED, manual=True, created_at=asked,
            started_at=asked + 2.25 * S, finished_at=asked + 2.75 * S, response_status=200,
            response_excerpt='{"queued": true}', deployment_id="d-8")
        _run(session, trigger_id, T0 + dt.timedelta(minutes=5), [],
             status=InvocationStatus.MISSED, last_error="missed: the scheduler was down",
             finished_at=T0 + dt.timedelta(minutes=7))
        _run(session, trigger_id, T0 - dt.timedelta(hours=1), [], manual=True, backfill=True,
             created_at=T0 + dt.timedelta(minutes=20))
        replayed_at = T0 + dt.timedelta(minutes=30)
        _run(session, trigger_id, replayed_at, [
            {"started_at": replayed_at + 90 * S, "finished_at": replayed_at + 95 * S,
             "outcome": "failed", "response_status": 500, "error": "HTTP 500: boom"}],
            status=InvocationStatus.FAILED, manual=True, replay_of=scheduled,
            created_at=replayed_at, started_at=replayed_at + 90 * S,
            finished_at=replayed_at + 95 * S, last_error="HTTP 500: boom",
            response_status=500, occurrence_at=T0)

    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops/triggers/{trigger_id}")
    assert browser.find_element(By.ID, "payload").text == (
        '{\n  "report": "daily",\n  "rows": [\n    1,\n    2\n  ]\n}')
    assert "not-for-your-eyes" not in browser.page_source
    assert "Authorization: <redacted>" in browser.find_element(By.ID, "target").text
    assert _cells(browser, "history", ".invocation", (
        ".origin", ".status", ".started", ".took", ".attempt-count", ".last-error")) == [
        ("replay", "failed", "2026-03-07 05:31:30 UTC (+1 min 30 s)", "5.0 s", "1",
         "HTTP 500: boom"),
        ("manual", "succeeded", "2026-03-07 05:10:00 UTC (+0.250 s)", "2.5 s", "2", ""),
        ("missed", "missed", "-", "-", "0", "missed: the scheduler was down"),
        ("scheduled", "succeeded", "2026-03-07 05:00:01 UTC (+1.5 s)", "0.500 s", "1", ""),
        ("backfill", "pending", "-", "-", "0", ""),
    ]

    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(
        By.CSS_SELECTOR, f'.invocation[data-id="{manual}"] .invocation-link').click()
    loaded(browser, page)
    assert browser.find_element(By.ID, "invocation-title").text == "Run of billing"
    assert browser.find_element(By.ID, "invocation-origin").text == "manual"
    assert browser.find_element(By.ID, "webhook-id").text == str(manual)
    assert browser.find_element(By.ID, "invocation-started").text == (
        "2026-03-07 05:10:00 UTC, 0.250 s after it was asked for")
    assert browser.find_element(By.ID, "invocation-took").text == "2.5 s"
    assert browser.find_element(By.ID, "invocation-deployment").text == "d-8"
    assert browser.find_element(By.ID, "response-status").text == "200"
    assert browser.find_element(By.ID, "response-excerpt").text == '{"queued": true}'
    assert browser.find_elements(By.ID, "task-outcome") == []
    assert _cells(browser, "attempts", ".attempt-row", (
        ".number", ".outcome", ".http", ".took", ".error", ".deployment")) == [
        ("1", "error", "503", "0.500 s", "HTTP 503: busy", "d-7"),
        ("2", "succeeded", "200", "0.500 s", "", "d-8"),
    ]

    # A replay links its original; another tenant's run is the 404 page.
    browser.get(f"{web_url}/console/projects/ops/triggers/{trigger_id}")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_elements(By.CSS_SELECTOR, ".invocation-link")[0].click()
    loaded(browser, page)
    assert browser.find_element(By.ID, "invocation-origin").text == f"replay, of {scheduled}"
    sign_in(browser, web_url, api_key(db, "globex"))
    browser.get(f"{web_url}/console/projects/ops/invocations/{manual}")
    assert browser.find_element(By.ID, "error-status").text == "404"
    assert "d-8" not in browser.page_source


def test_a_task_run_s_page_shows_the_task_s_own_outcome(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    tracked = create_trigger(web_app, key, name="tracked", target={
        "kind": "task", "task_name": "shop.tasks.report", "outcome": True})
    untracked = create_trigger(web_app, key, name="untracked", target={
        "kind": "task", "task_name": "shop.tasks.report"})
    with db.begin() as session:
        failed = _run(session, uuid.UUID(tracked["id"]), T0, [
            {"started_at": T0 + S, "finished_at": T0 + 4 * S, "outcome": "failed",
             "error": "ValueError: no rows for 2026-03-06"}],
            status=InvocationStatus.FAILED, finished_at=T0 + 4 * S,
            last_error="ValueError: no rows for 2026-03-06")
        sent = _run(session, uuid.UUID(untracked["id"]), T0, [
            {"started_at": T0 + S, "finished_at": T0 + 1.25 * S, "outcome": "succeeded"}],
            status=InvocationStatus.SUCCEEDED, finished_at=T0 + 1.25 * S)
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops/invocations/{failed}")
    assert browser.find_element(By.ID, "task-outcome").text == (
        "failed: ValueError: no rows for 2026-03-06")
    browser.get(f"{web_url}/console/projects/ops/invocations/{sent}")
    assert browser.find_element(By.ID, "task-outcome").text == (
        'not tracked: the run succeeds once the task is sent (set "outcome": true on the'
        " target to wait for it)")


def test_a_one_time_trigger_reads_due_until_the_tick_then_done_with_no_resume(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    with db.begin() as session:
        now = session.scalar(select(func.now()))
    run_at = (now + dt.timedelta(hours=1)).replace(microsecond=0)
    trigger = create_trigger(web_app, key, name="launch", cron_expression=None,
                             run_at=run_at.isoformat(), timezone="UTC", target=HOOK)
    trigger_id = uuid.UUID(trigger["id"])
    # Its instant comes (moved into the past: the web's own clock is the database's).
    due_at = (now - dt.timedelta(seconds=30)).replace(microsecond=0)
    with db.begin() as session:
        session.execute(update(Trigger).where(Trigger.id == trigger_id).values(
            run_at=due_at, next_run_at=due_at))
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops/triggers/{trigger_id}")
    assert browser.find_element(By.ID, "trigger-state").text == (
        f"due since {due_at:%Y-%m-%d %H:%M:%S} UTC: the next tick records its run")
    runs = browser.find_elements(By.CSS_SELECTOR, "#next-runs .next-run")
    assert [r.text for r in runs] == [
        f"{due_at:%Y-%m-%d %H:%M:%S} UTC due now {due_at:%Y-%m-%d %H:%M:%S} UTC"]

    report = dispatch_tick(db, lambda ids: len(ids), DispatchOptions(batch_size=500))
    assert report.created == 1
    browser.refresh()
    assert browser.find_element(By.ID, "trigger-state").text == (
        f"done: it fired once, at {due_at:%Y-%m-%d %H:%M:%S} UTC")
    assert browser.find_elements(By.ID, "resume") == []
    assert browser.find_elements(By.ID, "pause") == []
    assert browser.find_element(By.ID, "no-next-runs").text == (
        "None: it fired once and will not fire again.")
    browser.get(f"{web_url}/console/triggers")
    row = browser.find_element(By.CSS_SELECTOR, f'.trigger[data-id="{trigger_id}"]')
    assert row.find_element(By.CSS_SELECTOR, ".state-done").text == "done"
    assert [b.text for b in row.find_elements(By.CSS_SELECTOR, ".row-actions button")] == [
        "Run now"]

    # A page left open from before asks to resume: the error is on the page, not JSON,
    # and nothing is written.
    with db.begin() as session:
        version = session.get_one(Trigger, trigger_id).version
    browser.get(f"{web_url}/console/projects/ops/triggers/{trigger_id}")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.execute_script(
        "const form = document.getElementById('run-now').form;"
        "form.action = form.action.replace(/run$/, 'resume'); form.submit();")
    loaded(browser, page)
    assert browser.find_element(By.ID, "action-error").text == (
        "Not done: launch is done: there is nothing to resume")
    assert browser.find_element(By.ID, "trigger-name").text == "launch"
    with db.begin() as session:
        assert session.get_one(Trigger, trigger_id).version == version


def test_the_list_sorts_by_next_and_last_run_and_runs_pauses_and_resumes_a_row(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    made = {name: uuid.UUID(create_trigger(web_app, key, name=name, target=HOOK)["id"])
            for name in ("alpha", "bravo", "charlie", "delta")}
    with db.begin() as session:
        now = session.scalar(select(func.now()))
        for name, next_in_min, last_min_ago in (("alpha", 30, 5), ("bravo", 10, None),
                                                 ("charlie", None, 60), ("delta", 20, 1)):
            session.execute(update(Trigger).where(Trigger.id == made[name]).values(
                next_run_at=None if next_in_min is None
                else now + dt.timedelta(minutes=next_in_min),
                enabled=next_in_min is not None,
                last_scheduled_for=None if last_min_ago is None
                else now - dt.timedelta(minutes=last_min_ago)))
    sign_in(browser, web_url, key)

    def names() -> list[str]:
        return [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".trigger-link")]

    assert names() == ["alpha", "bravo", "charlie", "delta"]
    click(browser, "sort-next")
    assert names() == ["bravo", "delta", "alpha", "charlie"]  # none (paused) last
    click(browser, "sort-last")
    assert names() == ["delta", "alpha", "charlie", "bravo"]  # never last
    sorted_url = browser.current_url

    click(browser, f"pause-{made['alpha']}")
    assert browser.current_url == sorted_url
    assert browser.find_element(By.CSS_SELECTOR, ".flash").text == (
        "Paused alpha: its pending scheduled runs are cancelled.")
    click(browser, f"resume-{made['charlie']}")
    assert browser.current_url == sorted_url
    click(browser, f"run-now-{made['bravo']}")
    assert browser.find_element(By.CSS_SELECTOR, ".flash").text == (
        "Run of bravo requested: its history shows it pending, then its outcome.")
    with db.begin() as session:
        enabled = session.execute(select(Trigger.name, Trigger.enabled)).all()
        assert {name: on for name, on in enabled} == {
            "alpha": False, "bravo": True, "charlie": True, "delta": True}
        assert session.execute(select(Invocation.trigger_id, Invocation.manual)).all() == [
            (made["bravo"], True)]


def test_a_page_of_a_sorted_list_goes_on_where_it_stopped(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    ids = [uuid.UUID(create_trigger(web_app, key, name=f"job-{n:02}", target=HOOK)["id"])
           for n in range(53)]
    with db.begin() as session:
        now = session.scalar(select(func.now()))
        for n, trigger_id in enumerate(ids):  # job-52 runs first, job-00 last
            session.execute(update(Trigger).where(Trigger.id == trigger_id).values(
                next_run_at=now + dt.timedelta(minutes=100 - n)))
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/triggers?sort=next")
    first = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".trigger-link")]
    assert first == [f"job-{n:02}" for n in range(52, 2, -1)]
    click(browser, "next-page")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".trigger-link")] == [
        "job-02", "job-01", "job-00"]
    browser.get(f"{web_url}/console/triggers?sort=next&after_at=yesterday&after_id=x")
    assert browser.find_element(By.ID, "error-status").text == "400"
    browser.get(f"{web_url}/console/triggers?sort=size")
    assert browser.find_element(By.ID, "error-message").text == "sort: one of name, next, last"
