"""API keys: minted once, stored as a SHA-256 digest, checked in constant time.

A key is ``cb_`` followed by 32 random bytes in URL-safe base64. The key itself is shown
once, when it is created; the database keeps only its digest, so a leaked table cannot be
replayed against the API. Every function takes a ``Session`` and never commits: the caller
owns the transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.models import ApiKey, ConsoleSecret
from app.queries.apikeys import api_key_for_update

KEY_PREFIX = "cb_"
# A key longer than this cannot be one of ours; refusing it early keeps hashing cheap.
MAX_KEY_LENGTH = 256
TENANT_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,200}")


def generate_key() -> str:
    """Return a new random API key (``cb_`` + 43 URL-safe characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """Return the hex SHA-256 digest of ``token``: what the database stores for a key."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def tokens_equal(presented: str, expected: str) -> bool:
    """Compare two secrets in constant time.

    Both sides are hashed first, so the comparison always runs over two 32-byte digests:
    neither the length nor a common prefix of the expected secret leaks through timing.

    Returns:
        True if the two strings are equal.
    """
    return hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest(),
        hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest(),
    )


@dataclasses.dataclass(frozen=True)
class CreatedKey:
    """A freshly created key: the row, and the key itself (shown once, never stored)."""

    api_key: ApiKey
    key: str


def create_api_key(session: Session, tenant_id: str, name: str) -> CreatedKey:
    """Mint a key for ``tenant_id`` under ``name`` (unique per tenant, revoked keys included).

    Returns:
        The new row and the key.

    Raises:
        ValueError: the tenant id or the name is malformed (a caller's validation gap).
        Conflict: the tenant already has a key of that name.
    """
    if not TENANT_PATTERN.fullmatch(tenant_id) or not KEY_NAME_PATTERN.fullmatch(name):
        raise ValueError("tenant id or key name is malformed")
    key = generate_key()
    row = ApiKey(tenant_id=tenant_id, name=name, key_hash=digest(key))
    try:
        # A savepoint, so the caller's transaction survives the unique violation.
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict(f"an API key named {name!r} already exists for this tenant") from None
    return CreatedKey(api_key=row, key=key)


def revoke_api_key(session: Session, tenant_id: str, name: str, *, now: dt.datetime) -> ApiKey:
    """Revoke the tenant's active key called ``name``.

    Returns:
        The revoked row.

    Raises:
        NotFound: the tenant has no active key of that name.
    """
    row = session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant_id, ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ApiKey)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("no active API key of that name")
    return row


def revoke_api_key_by_id(session: Session, key_id: uuid.UUID, *, now: dt.datetime) -> ApiKey:
    """Revoke the key ``key_id``; revoking a revoked key again changes nothing.

    Returns:
        The row.

    Raises:
        NotFound: there is no such key.
    """
    row = api_key_for_update(session, key_id)
    if row is None:
        raise NotFound("no such API key")
    if row.revoked_at is None:
        row.revoked_at = now
    return row


def authenticate(session: Session, presented: str) -> str | None:
    """Find the tenant an API key belongs to (see :func:`authenticate_key`)."""
    found = authenticate_key(session, presented)
    return None if found is None else found[1]


def authenticate_key(session: Session, presented: str) -> tuple[uuid.UUID, str] | None:
    """Find an API key: its id and its tenant.

    The lookup goes through the unique index on the digest; the digest of a random
    32-byte key reveals nothing useful to a timing attacker, and the final check compares
    two fixed-length digests in constant time anyway.

    Returns:
        ``(key id, tenant id)``, or None for an unknown, revoked or malformed key.
    """
    if not presented.startswith(KEY_PREFIX) or len(presented) > MAX_KEY_LENGTH:
        return None
    presented_hash = digest(presented)
    row = session.execute(
        select(ApiKey.id, ApiKey.tenant_id, ApiKey.key_hash).where(
            ApiKey.key_hash == presented_hash, ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None or not hmac.compare_digest(row.key_hash, presented_hash):
        return None
    return row.id, row.tenant_id


def live_key_tenant(session: Session, key_id: uuid.UUID) -> str | None:
    """The tenant of API key ``key_id``, None once it is revoked (or never existed)."""
    return session.execute(
        select(ApiKey.tenant_id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).scalar()


def console_secret(session: Session) -> str:
    """The key that signs the console's session cookies, created on first use.

    One row for every web process (the first to ask creates it; a racing second keeps
    the first's), so a session signed by one process is read by all.
    """
    session.execute(
        pg_insert(ConsoleSecret).values(id=1, secret=secrets.token_urlsafe(48))
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return session.execute(select(ConsoleSecret.secret)).scalar_one()
