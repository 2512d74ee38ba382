"""The console's project page in a real headless Chromium: alert channels and the rule.

Each action is checked on the page and in the database: exactly what was written, and
nothing when it was refused.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from flask import Flask
from selenium.webdriver.common.by import By
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Alert, AlertChannel, AlertRule
from tests.browser.console_support import api_key, click, create_trigger, loaded, sign_in
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.slow
HOOK = {"kind": "webhook", "url": "https://example.com/h"}
DEFAULT_RULE_TEXT = ("after a failed run; on a missed run; when a run did not happen;"
                     " once on recovery")


def _count(db: sessionmaker[Session], model: type, *conditions: Any) -> int:
    with db.begin() as session:
        return session.scalar(
            select(func.count()).select_from(model).where(*conditions)) or 0


def _channel(db: sessionmaker[Session]) -> AlertChannel:
    with db.begin() as session:
        channel = session.execute(select(AlertChannel)).scalar_one()
        session.expunge(channel)
        return channel


def _text(browser: Any, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def _flash(browser: Any) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".flash")]


def _add_channel(browser: Any, name: str, url: str) -> None:
    for element_id, value in (("channel-name-input", name), ("channel-url-input", url)):
        field = browser.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    click(browser, "create-channel")


def _post_api(web_app: Flask, key: str, path: str, body: dict[str, Any],
              method: str = "post") -> dict[str, Any]:
    with web_app.test_client() as client:
        response = getattr(client, method)(f"/api/v1/projects/ops{path}", json=body,
                                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (200, 201), response.json
    return response.json


def test_a_channel_shows_its_secret_once_and_is_rotated_disabled_enabled_and_deleted(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = api_key(db, "acme")
    create_trigger(web_app, key, name="billing", target=HOOK)
    sign_in(browser, web_url, key)
    # From the trigger list, by the project's link.
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, ".project-link").click()
    loaded(browser, page)
    assert browser.current_url == f"{web_url}/console/projects/ops"
    assert browser.title == "ops · Cronbeat"
    assert _text(browser, "no-channels") == "No channel: this project's alerts go nowhere."
    assert _text(browser, "project-rule") == f"{DEFAULT_RULE_TEXT} (the default)"

    _add_channel(browser, "pager", "https://bot:hunter2@example.com/alerts")
    channel = _channel(db)
    assert (channel.tenant_id, channel.project_id, channel.name, channel.url,
            channel.enabled) == ("acme", "ops", "pager", "https://bot:hunter2@example.com/alerts",
                                 True)
    assert _flash(browser) == ["Channel pager added: it receives the project's alerts."]
    assert _text(browser, "new-secret-channel") == "pager"
    first = _text(browser, "new-secret")
    assert first == channel.signing_secret
    assert first.startswith("whsec_") and len(first) == 38
    row = browser.find_element(By.ID, f"channel-{channel.id}")
    assert [row.find_element(By.CSS_SELECTOR, f".channel-{part}").text
            for part in ("name", "url", "state")] == [
        "pager", "https://bot:<redacted>@example.com/alerts", "enabled"]
    assert "hunter2" not in browser.page_source
    # The secret was the POST's own answer: the page got again shows it no more.
    browser.get(f"{web_url}/console/projects/ops")
    assert browser.find_elements(By.ID, "new-secret-box") == []
    assert first not in browser.page_source
    assert _flash(browser) == []

    click(browser, f"rotate-{channel.id}")
    second = _text(browser, "new-secret")
    assert second != first
    assert second == _channel(db).signing_secret
    assert _flash(browser) == [
        "Channel pager has a new signing secret: the old one no longer signs."]
    browser.get(f"{web_url}/console/triggers")
    assert second not in browser.page_source
    browser.get(f"{web_url}/console/projects/ops")
    assert browser.find_elements(By.ID, "new-secret-box") == []
    assert second not in browser.page_source

    click(browser, f"disable-{channel.id}")
    assert _flash(browser) == ["Channel pager disabled: alerts skip it until it is enabled."]
    assert browser.find_element(By.CSS_SELECTOR, ".channel-state").text == "disabled"
    assert _channel(db).enabled is False
    click(browser, f"enable-{channel.id}")
    assert _flash(browser) == ["Channel pager enabled."]
    assert browser.find_element(By.CSS_SELECTOR, ".channel-state").text == "enabled"
    assert _channel(db).enabled is True

    browser.find_element(By.ID, f"confirm-{channel.id}").send_keys("pagr")
    click(browser, f"delete-{channel.id}")
    assert _text(browser, f"channel-{channel.id}-error") == (
        "confirm: type the channel's name (pager) to delete it")
    assert _count(db, AlertChannel) == 1
    browser.find_element(By.ID, f"confirm-{channel.id}").send_keys("pager")
    click(browser, f"delete-{channel.id}")
    assert _flash(browser) == ["Channel pager deleted."]
    assert _text(browser, "no-channels") == "No channel: this project's alerts go nowhere."
    assert _count(db, AlertChannel) == 0
    # The app's logs (the browser driver's own quote the page it reads).
    logged = " ".join(str(vars(record)) for record in caplog.records
                      if not record.name.startswith(("selenium", "urllib3")))
    assert "alert.channel_create" in logged
    assert first not in logged and second not in logged


def test_a_test_alert_is_sent_now_and_recorded(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session], receiver: Receiver,
) -> None:
    key = api_key(db, "acme")
    create_trigger(web_app, key, name="billing", target=HOOK)
    channel = _post_api(web_app, key, "/alerts/channels", {"name": "ops-hook",
                                                           "url": receiver.url("/a")})
    channel_id = uuid.UUID(channel["id"])
    receiver.script(Reply(200), Reply(500, body="down"))
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops")
    assert _text(browser, "no-alerts") == "No alerts."
    click(browser, f"test-{channel_id}")
    assert _flash(browser) == ["Test alert delivered (HTTP 200)."]
    assert receiver.count == 1
    with db.begin() as session:
        rows = [(a.tenant_id, a.project_id, a.channel_id, a.trigger_id, a.invocation_id, a.kind,
                 a.status, a.attempts, a.response_status, a.last_error, a.body["type"])
                for a in session.execute(select(Alert)).scalars()]
    assert rows == [("acme", "ops", channel_id, None, None, "test", "delivered", 1, 200, None,
                     "test")]

    click(browser, f"test-{channel_id}")
    assert _flash(browser) == ["Test alert failed: HTTP 500"]
    assert receiver.count == 2
    with db.begin() as session:
        rows = [(a.kind, a.status, a.attempts, a.response_status, a.last_error)
                for a in session.execute(select(Alert).order_by(Alert.created_at)).scalars()]
    assert rows == [("test", "delivered", 1, 200, None), ("test", "failed", 1, 500, "HTTP 500")]
    shown = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")[1:]]
             for row in browser.find_elements(By.CSS_SELECTOR, "#project-alerts .alert")]
    assert shown == [["test", "ops-hook", "failed after 1 attempt (HTTP 500)", "HTTP 500"],
                     ["test", "ops-hook", "delivered after 1 attempt (HTTP 200)", ""]]


def test_the_project_s_rule_is_edited_refused_when_bad_and_cleared(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    create_trigger(web_app, key, name="billing", target=HOOK)
    own = create_trigger(web_app, key, name="nightly", target=HOOK)
    _post_api(web_app, key, f"/triggers/{own['id']}/alerts/rule", {"on_missed": False},
              method="put")
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops")
    rows = browser.find_elements(By.CSS_SELECTOR, "#own-rules .own-rule")
    assert [(r.find_element(By.CSS_SELECTOR, ".trigger-link").text,
             r.find_element(By.CSS_SELECTOR, ".own-rule-text").text) for r in rows] == [
        ("nightly", "after a failed run; when a run did not happen; once on recovery")]
    assert browser.find_elements(By.ID, "clear-rule") == []

    def fill(failures: str, late: str) -> None:
        for name, value in (("failures_in_a_row", failures), ("late_after_s", late)):
            field = browser.find_element(By.ID, f"rule-{name}")
            field.clear()
            field.send_keys(value)

    browser.find_element(By.ID, "rule-on_missed").click()  # untick
    fill("0", "soon")
    click(browser, "save-rule")
    assert _text(browser, "rule-error") == (
        "failures_in_a_row: Must be greater than or equal to 1 and less than or equal to"
        " 1000.; late_after_s: Not a valid integer.")
    assert _count(db, AlertRule) == 1  # the trigger's own only
    # The form as sent.
    assert browser.find_element(By.ID, "rule-failures_in_a_row").get_attribute("value") == "0"
    assert browser.find_element(By.ID, "rule-late_after_s").get_attribute("value") == "soon"
    assert not browser.find_element(By.ID, "rule-on_missed").is_selected()
    assert _text(browser, "project-rule") == f"{DEFAULT_RULE_TEXT} (the default)"

    fill("3", "120")
    click(browser, "save-rule")
    assert browser.find_elements(By.ID, "rule-error") == []
    with db.begin() as session:
        stored = [(r.tenant_id, r.project_id, r.on_failure, r.failures_in_a_row, r.on_missed,
                   r.late_after_s, r.on_recovery, r.on_didnt_run)
                  for r in session.execute(
                      select(AlertRule).where(AlertRule.trigger_id.is_(None))).scalars()]
    assert stored == [("acme", "ops", True, 3, False, 120, True, True)]
    text = ("after 3 failed runs in a row; on a start over 120 s late;"
            " when a run did not happen; once on recovery")
    assert _flash(browser) == [f"The project's rule is now: {text}."]
    assert _text(browser, "project-rule") == f"{text} (the project's own)"
    assert browser.find_element(By.ID, "rule-failures_in_a_row").get_attribute("value") == "3"
    assert browser.find_element(By.ID, "rule-late_after_s").get_attribute("value") == "120"

    click(browser, "clear-rule")
    assert _flash(browser) == ["The project's rule is cleared: its triggers without a rule"
                               " of their own follow the defaults."]
    assert _text(browser, "project-rule") == f"{DEFAULT_RULE_TEXT} (the default)"
    assert _count(db, AlertRule, AlertRule.trigger_id.is_(None)) == 0
    assert _count(db, AlertRule) == 1
    assert browser.find_element(By.ID, "rule-late_after_s").get_attribute("value") == ""

    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "#own-rules .trigger-link").click()
    loaded(browser, page)
    assert _text(browser, "trigger-name") == "nightly"
    assert _text(browser, "alert-channels") == (
        "none enabled: this project's alerts go nowhere (add one on the project's page)")
    click(browser, "channels-link")
    assert browser.current_url == f"{web_url}/console/projects/ops"


def test_a_bad_url_and_a_taken_name_show_their_error_and_write_nothing(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    key = api_key(db, "acme")
    create_trigger(web_app, key, name="billing", target=HOOK)
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops")
    _add_channel(browser, "pager", "example.com/alerts")
    assert _text(browser, "create-channel-error") == "url: must start with http:// or https://"
    assert browser.find_element(By.ID, "channel-name-input").get_attribute("value") == "pager"
    assert browser.find_element(By.ID, "channel-url-input").get_attribute(
        "value") == "example.com/alerts"
    assert _count(db, AlertChannel) == 0
    assert browser.find_elements(By.ID, "new-secret-box") == []

    _add_channel(browser, "pager", "https://example.com/alerts")
    assert _count(db, AlertChannel) == 1
    secret = _channel(db).signing_secret
    _add_channel(browser, "pager", "https://example.org/other")
    assert _text(browser, "create-channel-error") == (
        "name: an alert channel named 'pager' exists in this project")
    assert browser.find_element(By.ID, "channel-url-input").get_attribute(
        "value") == "https://example.org/other"
    assert _text(browser, "project-name") == "ops"
    channel = _channel(db)
    assert (channel.url, channel.signing_secret) == ("https://example.com/alerts", secret)
    assert browser.find_elements(By.ID, "new-secret-box") == []


def test_another_tenant_s_project_and_channels_are_404_pages(
    browser: Any, web_url: str, web_app: Flask, db: sessionmaker[Session],
) -> None:
    theirs_key = api_key(db, "acme")
    create_trigger(web_app, theirs_key, name="billing", target=HOOK)
    theirs = _post_api(web_app, theirs_key, "/alerts/channels",
                       {"name": "acme-pager", "url": "https://example.com/a"})
    key = api_key(db, "globex")
    sign_in(browser, web_url, key)
    browser.get(f"{web_url}/console/projects/ops")
    assert _text(browser, "error-status") == "404"
    assert _text(browser, "error-message") == "no such project"
    assert "acme-pager" not in browser.page_source
    for project_id in ("x" * 65, "o%00ps"):  # no project can have these
        browser.get(f"{web_url}/console/projects/{project_id}")
        assert (_text(browser, "error-status"), _text(browser, "error-message")) == (
            "404", "no such project"), project_id

    # Globex's own project, whose forms are sent to acme's channel and project.
    with web_app.test_client() as client:
        response = client.post("/api/v1/projects/web/triggers", json={
            "name": "site", "cron_expression": "*/5 * * * *", "target": HOOK},
            headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201, response.json
    for path in (f"ops/channels/{theirs['id']}/rotate", f"web/channels/{theirs['id']}/rotate",
                 f"ops/channels/{theirs['id']}/delete", "ops/rule"):
        browser.get(f"{web_url}/console/projects/web")
        assert _text(browser, "project-name") == "web"
        page = browser.find_element(By.TAG_NAME, "html")
        browser.execute_script(
            "const form = document.getElementById('save-rule').form;"
            f"form.action = '/console/projects/{path}';"
            "const confirm = document.createElement('input');"
            "confirm.name = 'confirm'; confirm.value = 'acme-pager'; form.append(confirm);"
            "form.submit();")
        loaded(browser, page)
        assert _text(browser, "error-status") == "404", path
    channel = _channel(db)
    assert (channel.tenant_id, channel.name, channel.signing_secret) == (
        "acme", "acme-pager", theirs["signing_secret"])
    assert _count(db, AlertRule) == 0
