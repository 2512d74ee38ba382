"""The console in a real headless Chromium: sign in, find, look, act, sign out; isolation."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from flask import Flask
from selenium.webdriver.common.by import By
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.editing import apikeys
from app.models import Invocation
from tests.browser.console_support import (
    api_key,
    click,
    create_trigger,
    history_rows,
    loaded,
    sign_in,
    until,
)
from tests.support.code_sync import code_sync
from tests.support.receiver import Receiver, Reply
from tests.support.runs import T0, add_invocation, run

pytestmark = pytest.mark.slow


def test_an_operator_finds_a_trigger_among_many_runs_pauses_resumes_and_signs_out(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
    celery_worker: object, receiver: Receiver,
) -> None:
    key = api_key(db, "acme")
    hook = {"kind": "webhook", "url": receiver.url()}
    for n in range(60):
        create_trigger(web_app, key, name=f"job-{n:03}", target=hook)
    create_trigger(web_app, key, name="nightly-report", cron_expression="30 2 * * *", target=hook,
            ref="reports")
    create_trigger(web_app, key, name="flaky", target=hook, max_attempts=1)

    sign_in(browser, web_url, key)
    assert browser.find_element(By.ID, "tenant").text == "acme"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#triggers .trigger")) == 50
    click(browser, "next-page")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".trigger-link")] == [
        # By name: "flaky" came first on page one.
        *(f"job-{n:03}" for n in range(49, 60)), "nightly-report"]
    browser.find_element(By.ID, "search").send_keys("REPORTS")  # the ref, any case
    click(browser, "filter")
    rows = browser.find_elements(By.CSS_SELECTOR, "#triggers .trigger")
    assert len(rows) == 1
    assert len(rows[0].find_elements(By.CSS_SELECTOR, "svg.strip rect")) == 30
    page = browser.find_element(By.TAG_NAME, "html")
    rows[0].find_element(By.CSS_SELECTOR, ".trigger-link").click()
    loaded(browser, page)

    assert browser.find_element(By.ID, "trigger-name").text == "nightly-report"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#next-runs .next-run")) == 10
    assert browser.find_element(By.ID, "no-history").text == "No runs yet."
    click(browser, "run-now")
    delivered = until(lambda: next(
        (rows for rows in [history_rows(browser)] if rows[0][0] == "succeeded"), None),
        reload=browser)
    assert delivered == [("succeeded", "#1 succeeded HTTP 200 on test-worker", "")]
    assert receiver.count == 1

    browser.find_element(By.ID, "pause-note-input").send_keys("maintenance window")
    click(browser, "pause")
    assert browser.find_element(By.ID, "trigger-state").text == "paused: maintenance window"
    assert browser.find_elements(By.CSS_SELECTOR, "#next-runs .next-run") == []
    click(browser, "resume")
    assert browser.find_element(By.ID, "trigger-state").text == "enabled"

    # A failed run shows its error.
    receiver.script(Reply(status=500, body="the database is down"))
    browser.get(f"{web_url}/console/triggers?q=flaky")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, ".trigger-link").click()
    loaded(browser, page)
    click(browser, "run-now")
    _, _, error = until(lambda: next(
        (row for row in history_rows(browser) if row[0] == "failed"), None), reload=browser)
    assert "500" in error
    browser.get(f"{web_url}/console/triggers?failing=1")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".trigger-link")] == [
        "flaky"]

    click(browser, "sign-out")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    browser.get(f"{web_url}/console/triggers")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"


def test_a_code_managed_trigger_s_page_names_its_code_and_it_may_still_be_paused(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    hook = {"kind": "webhook", "url": "https://example.com/hook"}
    code_sync(web_app, db, "acme", "ops", {
        "name": "daily-report", "cron_expression": "0 9 * * 1-5",
        "timezone": "Europe/Berlin", "target": hook})
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/triggers?q=daily-report")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, ".trigger-link").click()
    loaded(browser, page)
    note = ("managed by code in shop.celery:app: change its schedule there and run cronbeat"
            " sync (pausing, resuming and running it now are fine here)")
    assert browser.find_element(By.ID, "managed-by").text == note
    assert browser.find_element(By.ID, "managed").text == "code in shop.celery:app"
    browser.find_element(By.ID, "pause-note-input").send_keys("release freeze")
    click(browser, "pause")
    assert browser.find_element(By.ID, "trigger-state").text == "paused: release freeze"
    assert browser.find_element(By.ID, "managed-by").text == note
    click(browser, "resume")
    assert browser.find_element(By.ID, "trigger-state").text == "enabled"

    mine = create_trigger(web_app, key, name="mine", target=hook)
    browser.get(f"{web_url}/console/projects/ops/triggers/{mine['id']}")
    assert browser.find_elements(By.ID, "managed-by") == []
    assert browser.find_element(By.ID, "managed").text == "the API"
    # The list tells the code's rows from the API's.
    browser.get(f"{web_url}/console/triggers")
    assert {row.get_attribute("data-name"): [m.text for m in row.find_elements(
        By.CSS_SELECTOR, ".managed-row")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#triggers .trigger")} == {
        "daily-report": ["code: shop.celery:app"], "mine": []}


def test_another_tenant_s_trigger_is_a_404_and_a_revoked_key_ends_the_session(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    theirs = create_trigger(web_app, api_key(db, "acme"), name="acme-only",
                     target={"kind": "webhook", "url": "https://example.com/h"})
    key = api_key(db, "globex")
    sign_in(browser, web_url, key)
    assert browser.find_element(By.ID, "no-triggers").text == "No triggers match."
    browser.get(f"{web_url}/console/projects/ops/triggers/{theirs['id']}")
    assert browser.find_element(By.ID, "error-status").text == "404"
    assert "acme-only" not in browser.page_source

    with db.begin() as session:
        apikeys.revoke_api_key_by_id(session, apikeys.authenticate_key(session, key)[0],
                                     now=session.scalar(select(func.now())))
    browser.get(f"{web_url}/console/triggers")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    trigger = create_trigger(web_app, key, name="guarded",
                      target={"kind": "webhook", "url": "https://example.com/h"})
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops/triggers/{trigger['id']}")
    browser.execute_script(
        "const form = document.getElementById('run-now').form;"
        "form.querySelector('[name=csrf_token]').remove(); form.submit();")
    assert browser.find_element(By.ID, "error-status").text == "400"
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Invocation)) == 0


def test_the_deployments_page_wants_the_admin_token(
    browser: Any, web_url: str, db: sessionmaker[Session],
) -> None:
    sign_in(browser, web_url, api_key(db, "acme"))
    browser.get(f"{web_url}/console/deployments")
    browser.find_element(By.ID, "admin-token").send_keys("not-the-token-at-all")
    click(browser, "admin-sign-in")
    assert browser.find_element(By.ID, "error").text.startswith("That is not the admin token")
    browser.find_element(By.ID, "admin-token").send_keys("test-admin-token-0123456789")
    click(browser, "admin-sign-in")
    assert browser.find_element(By.ID, "generation").text == "0"
    assert browser.find_element(By.ID, "active-deployment").text.startswith("none activated")


def test_a_trigger_s_page_shows_its_alert_condition_rule_and_alerts(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
    celery_worker: object, celery_client: Any, receiver: Receiver,
) -> None:
    key = api_key(db, "acme")
    trigger = create_trigger(web_app, key, name="billing", max_attempts=1,
                      target={"kind": "webhook", "url": receiver.url()})
    alert_receiver = Receiver()
    try:
        with web_app.test_client() as client:
            auth = {"Authorization": f"Bearer {key}"}
            assert client.post("/api/v1/projects/ops/alerts/channels", headers=auth, json={
                "name": "ops", "url": alert_receiver.url()}).status_code == 201
            assert client.put("/api/v1/projects/ops/alerts/rule", headers=auth, json={
                "failures_in_a_row": 2}).status_code == 200
        sign_in(browser, web_url, key)
        browser.get(f"{web_url}/console/projects/ops/triggers/{trigger['id']}")
        assert browser.title == "billing · Cronbeat"
        assert len(browser.find_elements(By.ID, "alerts-summary")) == 1
        assert browser.find_element(By.ID, "alert-condition").text == "fine"
        assert browser.find_element(By.ID, "alert-rule").text == (
            "after 2 failed runs in a row; on a missed run; when a run did not happen;"
            " once on recovery (the project's)")
        assert browser.find_element(By.ID, "alert-channels").text == "1 enabled"
        assert browser.find_element(By.ID, "no-alerts").text == "No alerts."

        receiver.script(Reply(500), Reply(500))
        trigger_id = uuid.UUID(trigger["id"])
        for n in range(2):
            invocation_id = add_invocation(db, trigger_id, T0 + n * dt.timedelta(minutes=5),
                                           tenant_id="acme", project_id="ops")
            assert run(celery_client, db, invocation_id).status.value == "failed"
        alert_receiver.wait_for(1)
        rows = until(lambda: [
            (r.find_element(By.CSS_SELECTOR, ".alert-kind").text,
             r.find_element(By.CSS_SELECTOR, ".alert-delivery").text)
            for r in browser.find_elements(By.CSS_SELECTOR, "#alerts .alert")
            if "delivered" in r.text], reload=browser)
        assert rows == [("failing", "delivered after 1 attempt (HTTP 200)")]
        condition = browser.find_element(By.ID, "alert-condition").text
        assert condition.startswith("failing since ")
        assert condition.endswith(", 2 failed in a row")
        assert alert_receiver.count == 1
    finally:
        alert_receiver.close()
