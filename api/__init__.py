"""The HTTP API: a Flask app factory with flask-smorest blueprints under /api/v1."""

from __future__ import annotations

import io
from typing import Any

from celery import Celery
from flask import Flask, Response, request
from webargs.flaskparser import abort

from api import (
    admin,
    alerts,
    deploy,
    docs,
    errors,
    health,
    invocations,
    metrics,
    schedules,
    triggers,
)

# The console's page modules add their routes to its blueprint when imported.
from api.console import project_views, trigger_views, views  # noqa: F401
from api.console import session as console_session
from api.console.blueprint import blp as console_blueprint
from api.schemas.fields import PROJECT_ID_PATTERN, one_of_to_openapi
from api.state import ApiState
from app.config import Settings
from app.db import make_engine, make_session_factory
from messaging.config import configure

# Big enough for a sync of 1,000 triggers with modest payloads; each payload is bounded
# to 64 KiB by the schema.
MAX_BODY_BYTES = 16 * 1024 * 1024
PUBLISH_TIMEOUT_S = 2
PROJECT_ID_PARAMETER = {
    "in": "path", "name": "project_id", "required": True,
    "schema": {"type": "string", "pattern": PROJECT_ID_PATTERN},
}
SPEC_OPTIONS: dict[str, Any] = {
    "info": {"description": "Cronbeat: scheduled triggers stored in PostgreSQL, fired"
             " exactly once through Celery. Authenticate with `Authorization: Bearer <key>`."},
    "security": [{"apiKey": []}],
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "A tenant's API key (cb_...)."},
            "adminToken": {"type": "http", "scheme": "bearer",
                           "description": "The operator's CRONBEAT_ADMIN_TOKEN."},
            "deployToken": {"type": "http", "scheme": "bearer",
                            "description": "CI's CRONBEAT_DEPLOY_TOKEN."},
        }
    },
}


def _require_json_body() -> None:
    # A body the JSON parser would silently ignore (form data, text) is refused as such,
    # instead of being read as "no fields given".
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    has_body = bool(request.content_length) or chunked
    # The console's forms are form-encoded (api/console); everything else speaks JSON.
    if has_body and not request.is_json and not request.path.startswith("/console/"):
        abort(415, message="Send the body as application/json.")
    if chunked:
        _bound_chunked_body()


_READ_BYTES = 64 * 1024


def _bound_chunked_body() -> None:
    """Read a chunked body now: over MAX_BODY_BYTES is a 413, never a truncated parse.

    With no Content-Length, Werkzeug's stream stops quietly at max_content_length, and
    the JSON parser would read the first 16 MiB as the whole body. Here the body is read
    to one byte past the limit; a body within it is handed on as read.
    """
    environ = request.environ
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        part = stream.read(min(_READ_BYTES, MAX_BODY_BYTES + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > MAX_BODY_BYTES:
        abort(413, message=f"The body must be at most {MAX_BODY_BYTES} bytes.")
    environ["wsgi.input"] = io.BytesIO(b"".join(parts))
    environ["wsgi.input_terminated"] = True


# Answers that may never be cached: everything under /api/ but the public documents.
# Creating a trigger or an API key answers a secret shown only once; a shared cache or a
# browser's disk must not keep it, nor any tenant's data.
_CACHEABLE_PATHS = ("/api/v1/openapi.json", "/api/v1/docs")


def _no_store(response: Response) -> Response:
    path = request.path
    if path.startswith("/api/") and not path.startswith(_CACHEABLE_PATHS):
        response.headers["Cache-Control"] = "no-store"
    return response


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API app. Opens no connection: the first request does.

    Raises:
        ConfigError: ``settings`` is None and the environment is incomplete.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    # A path with a trailing slash is the route without it (/triggers/ is /triggers),
    # not a 404: before any route is added, so that every route takes it.
    app.url_map.strict_slashes = False
    app.config.update(
        API_TITLE="Cronbeat",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served by this app from the swagger-ui-bundle package (api/docs.py), not a CDN.
        OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL,
        API_SPEC_OPTIONS=SPEC_OPTIONS,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    engine = make_engine(settings)
    celery = configure(Celery("cronbeat-api", set_as_current=False), settings)
    # This app only publishes, from inside a request: an unreachable broker must fail
    # within a couple of seconds (the sweep publishes later), not retry for long.
    celery.conf.broker_transport_options = {
        "max_retries": 1, "interval_start": 0, "interval_step": 0.5,
        "socket_connect_timeout": PUBLISH_TIMEOUT_S, "socket_timeout": PUBLISH_TIMEOUT_S,
    }
    app.extensions["cronbeat"] = ApiState(
        settings=settings, engine=engine, sessions=make_session_factory(engine), celery=celery
    )
    api = errors.Api(app)
    api.ma_plugin.converter.add_attribute_function(one_of_to_openapi)
    errors.init_app(app)
    app.before_request(_require_json_body)
    app.after_request(_no_store)
    api.register_blueprint(health.blp)
    api.register_blueprint(triggers.blp, parameters=[PROJECT_ID_PARAMETER])
    api.register_blueprint(invocations.blp, parameters=[PROJECT_ID_PARAMETER])
    api.register_blueprint(alerts.blp, parameters=[PROJECT_ID_PARAMETER])
    api.register_blueprint(schedules.blp)
    api.register_blueprint(admin.blp)
    api.register_blueprint(deploy.blp)
    api.register_blueprint(metrics.blp)
    app.register_blueprint(docs.blp)
    console_session.configure(app, settings.console_secret, settings.console_secure_cookies)
    app.register_blueprint(console_blueprint)
    return app
