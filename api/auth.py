"""Who is calling: a tenant's API key, or the operator's admin token.

Both arrive as ``Authorization: Bearer <token>``. A missing or bad token is a 401 with
``WWW-Authenticate: Bearer``; the answer never says which part was wrong. A tenant's
request only ever sees its own rows (the core filters by tenant), so another tenant's
trigger is a 404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

import re

from flask import g, request
from webargs.flaskparser import abort

from api.errors import UNAUTHORIZED_HEADERS
from api.schemas.fields import PROJECT_ID_PATTERN, PROJECT_ID_RULE
from api.state import state
from app.config import MAX_TOKEN_CHARS
from app.editing import apikeys

# Longer than any key or token we issue (a configured token is refused at start if it is
# longer); refusing early keeps hashing bounded.
_MAX_TOKEN_LENGTH = MAX_TOKEN_CHARS
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)


# Each 401 names the credential its route wants, never whether the one sent was close.
API_KEY_REQUIRED = "A valid API key is required (Authorization: Bearer <key>)."
ADMIN_TOKEN_REQUIRED = ("The admin token is required (Authorization: Bearer "  # noqa: S105
                        "<CRONBEAT_ADMIN_TOKEN>).")
DEPLOY_TOKEN_REQUIRED = ("The deploy token is required (Authorization: Bearer "  # noqa: S105
                         "<CRONBEAT_DEPLOY_TOKEN>).")
METRICS_TOKEN_REQUIRED = ("The metrics token is required (Authorization: "  # noqa: S105
                          "Bearer <CRONBEAT_METRICS_TOKEN>).")


def unauthorized(message: str = API_KEY_REQUIRED) -> None:
    """Abort with the one 401 answer, naming the credential wanted."""
    abort(401, headers=UNAUTHORIZED_HEADERS, message=message)


def _unauthorized() -> None:
    unauthorized(API_KEY_REQUIRED)


def bearer_token() -> str | None:
    """Return the request's bearer token, or None if there is none."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    return token


def require_tenant() -> None:
    """before_request of the tenant API: authenticate, then check the project id."""
    token = bearer_token()
    if token is None:
        _unauthorized()
    with state().sessions.begin() as session:
        tenant_id = apikeys.authenticate(session, token)
    if tenant_id is None:
        _unauthorized()
    g.tenant_id = tenant_id
    project_id = (request.view_args or {}).get("project_id")
    if project_id is not None and not _PROJECT_ID.fullmatch(project_id):
        abort(422, messages={"path": {"project_id": [PROJECT_ID_RULE]}})


def require_admin() -> None:
    """before_request of the admin API: the token must equal CRONBEAT_ADMIN_TOKEN."""
    token = bearer_token()
    expected = state().settings.admin_token
    # Compared even when no admin token is configured, so timing says nothing about it.
    matches = apikeys.tokens_equal(token or "", expected or "")
    if token is None or expected is None or not matches:
        unauthorized(ADMIN_TOKEN_REQUIRED)


def tenant_id() -> str:
    """Return the authenticated tenant of this request."""
    return g.tenant_id
