"""The console's session: a signed cookie (HttpOnly, SameSite=Strict, path /console).

It holds the id of the API key the user signed in with (never the key itself), whether
the admin token was given, and the form token every POST must send back (CSRF). Every
request re-reads the key, so a revoked key ends its sessions at their next click.

The signing key is CRONBEAT_CONSOLE_SECRET, else one generated once and kept in the
database (:func:`app.editing.apikeys.console_secret`), read lazily: building the app
opens no connection, and requests outside /console never open a session at all.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from typing import Any

from flask import Flask, Request, abort, request, session
from flask.sessions import SecureCookieSessionInterface, SessionMixin

from api.state import state
from app.editing import apikeys

PREFIX = "/console"
COOKIE_NAME = "cronbeat_console"
CSRF_FIELD = "csrf_token"


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, for /console only, with the secret read lazily."""

    def get_signing_serializer(self, app: Flask) -> Any:
        if not app.secret_key:
            current = app.extensions["cronbeat"]
            with current.sessions.begin() as db:
                app.secret_key = apikeys.console_secret(db)
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not request.path.startswith(PREFIX):
            return self.null_session_class()
        return super().open_session(app, request)


def configure(app: Flask, secret: str | None, secure: bool) -> None:
    app.secret_key = secret
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure,
    )


def csrf_token() -> str:
    """This session's form token (created with the session)."""
    token = session.get(CSRF_FIELD)
    if token is None:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse (400) a POST whose form token is missing or not this session's."""
    if request.method != "POST":
        return
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(expected, sent):
        abort(400, description="This form did not come from this console session "
                               "(or the session expired): reload the page and try again.")


def sign_in(key_id: uuid.UUID) -> None:
    session.clear()
    session["key_id"] = str(key_id)
    csrf_token()


def signed_in_tenant() -> str | None:
    """The tenant of the session's key, None if signed out or the key was revoked."""
    try:
        key_id = uuid.UUID(session["key_id"])
    except (KeyError, TypeError, ValueError):
        return None
    with state().sessions.begin() as db:
        tenant_id = apikeys.live_key_tenant(db, key_id)
    if tenant_id is None:
        session.clear()
    return tenant_id
