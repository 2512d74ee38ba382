"""What the console's browser tests share: API keys, triggers, signing in, clicking and
waiting for the page that a form's redirect loads."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.orm import Session, sessionmaker

from app.editing import apikeys

WAIT_S = 30.0


def api_key(db: sessionmaker[Session], tenant_id: str) -> str:
    with db.begin() as session:
        return apikeys.create_api_key(session, tenant_id, f"console-{uuid.uuid4()}").key


def create_trigger(web_app: Flask, key: str, **body: Any) -> dict[str, Any]:
    """A trigger of project ``ops`` through the API: every 5 minutes in Berlin unless
    ``body`` says otherwise."""
    with web_app.test_client() as client:
        definition = {"cron_expression": "*/5 * * * *", "timezone": "Europe/Berlin", **body}
        response = client.post(  # a None leaves the default out (run_at for a one-time)
            "/api/v1/projects/ops/triggers", headers={"Authorization": f"Bearer {key}"},
            json={name: value for name, value in definition.items() if value is not None})
    assert response.status_code == 201, response.json
    return response.json


def sign_in(browser: Any, web_url: str, key: str) -> None:
    browser.get(f"{web_url}/console/")
    browser.delete_all_cookies()
    browser.get(f"{web_url}/console/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    browser.find_element(By.ID, "api-key").send_keys(key)
    click(browser, "sign-in")


def click(browser: Any, element_id: str) -> None:
    """Click and wait for the next page (a form POST answers with a redirect)."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, element_id).click()
    loaded(browser, page)


def replaced(page: Any) -> Callable[[Any], bool]:
    """Whether ``page`` (the old document's root) is gone: selenium's ``staleness_of``, which
    also takes ChromeDriver's other answer for a node of a document being replaced."""

    def gone(_: Any) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone


def loaded(browser: Any, page: Any) -> None:
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(replaced(page))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")


def until(check: Callable[[], Any], reload: Any = None) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if reload is not None:
            reload.refresh()
        try:
            value = check()
        except WebDriverException:  # read while the page was being replaced
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("the page never showed it")


def history_rows(browser: Any) -> list[tuple[str, str, str]]:
    return [(row.find_element(By.CSS_SELECTOR, ".status").text,
             " / ".join(a.text for a in row.find_elements(By.CSS_SELECTOR, ".attempt")),
             row.find_element(By.CSS_SELECTOR, ".last-error").text)
            for row in browser.find_elements(By.CSS_SELECTOR, "#history .invocation")]
