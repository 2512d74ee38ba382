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
from api.schemas.fields import PROJECT_ID_PATTERN
from api.state import state
from app import apikeys

# Longer than any key or token we issue; refusing early keeps hashing bounded.
_MAX_TOKEN_LENGTH = 512
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)


def _unauthorized() -> None:
    abort(401, headers=UNAUTHORIZED_HEADERS)


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
        abort(422, messages={"path": {"project_id": ["must be 1-64 of A-Z a-z 0-9 . _ -"]}})


def require_admin() -> None:
    """before_request of the admin API: the token must equal CRONBEAT_ADMIN_TOKEN."""
    token = bearer_token()
    expected = state().settings.admin_token
    # Compared even when no admin token is configured, so timing says nothing about it.
    matches = apikeys.tokens_equal(token or "", expected or "")
    if token is None or expected is None or not matches:
        _unauthorized()


def tenant_id() -> str:
    """Return the authenticated tenant of this request."""
    return g.tenant_id
