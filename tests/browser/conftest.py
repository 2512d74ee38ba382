"""A real headless Chromium (Debian's chromium and chromium-driver) against a live web app.

The browser has no network beyond loopback: every other host resolves to nothing and
every proxied request goes to a closed port, so a page that needs the internet shows it.
Without chromium and chromedriver the browser tests are skipped, and the run's summary
says so and why; under CI (``CI`` set) they fail instead, since .ci/run installs both.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from werkzeug.serving import make_server

from api import create_app
from app.config import Settings

CHROMIUM = os.environ.get("CRONBEAT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CRONBEAT_CHROMEDRIVER", "/usr/bin/chromedriver")
MISSING = (
    "browser tests not run: Debian's chromium and chromium-driver are not installed"
    " (apt-get install chromium chromium-driver; .ci/run does it)"
)
PAGE_LOAD_TIMEOUT_S = 20


def _have_browser() -> bool:
    return all(shutil.which(path) for path in (CHROMIUM, CHROMEDRIVER))


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    if not _have_browser():
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1280,1024",
        # No network but loopback.
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def web_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["cronbeat"].engine.dispose()


@pytest.fixture(scope="session")
def web_url(web_app: Flask) -> Iterator[str]:
    """The app served over HTTP on a loopback port, in a thread of this process."""
    server = make_server("127.0.0.1", 0, web_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


# A real worker and loopback receiver for the console's "run now"; the client publishes
# scheduled runs.
from tests.integration.conftest import (  # noqa: E402, F401 - fixtures, used by name
    _module_worker,
    celery_client,
    celery_worker,
    receiver,
)
