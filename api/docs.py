"""Swagger UI's assets, from the swagger-ui-bundle package: /api/v1/docs needs no network.

flask-smorest renders the page at ``/api/v1/docs`` and loads ``swagger-ui.css``,
``swagger-ui-standalone-preset.js`` and ``swagger-ui-bundle.js`` from
OPENAPI_SWAGGER_UI_URL; this blueprint serves those files (and nothing else of the
package) from the installed package.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/api/v1/docs/assets/"
#: What the page loads, and the favicons a browser asks for.
ASSETS = frozenset({
    "swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
    "favicon-16x16.png", "favicon-32x32.png",
})
#: A day: the files change only with the package's version.
MAX_AGE_S = 86_400

blp = Blueprint("docs_assets", __name__)


@blp.get(f"{ASSETS_URL}<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    response = send_from_directory(swagger_ui_path, name, max_age=MAX_AGE_S)
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE_S}"
    return response
