"""/api/v1/docs renders in a browser that has no network: Swagger UI ships with Cronbeat."""

from __future__ import annotations

from flask import Flask
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

METHODS = {"get", "put", "post", "delete", "patch"}


def test_the_api_docs_render_every_operation_offline(
    browser, web_url: str, web_app: Flask,
) -> None:
    with web_app.test_client() as client:
        spec = client.get("/api/v1/openapi.json").json
    operations = sorted(
        (method.upper(), path) for path, item in spec["paths"].items()
        for method in item if method in METHODS
    )
    browser.get(f"{web_url}/api/v1/docs")
    WebDriverWait(browser, 20).until(
        ec.presence_of_all_elements_located((By.CSS_SELECTOR, ".opblock-summary")))
    rendered = sorted(
        (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
         block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
             "data-path"))
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")
    )
    assert rendered == operations
    assert ("GET", "/api/v1/projects/{project_id}/invocations") in rendered
