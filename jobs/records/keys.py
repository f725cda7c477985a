"""API keys: made with a secret shown once, stored as its SHA-256, revoked, authenticated."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.records.models import ApiKey, Scope, utcnow
from jobs.records.sql import get_row

API_KEY_PREFIX = "rsk_"
API_KEY_DISPLAY_CHARS = 8
# authenticate() writes last_used_at at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_api_key(secret: str) -> str:
    """The SHA-256 hex digest under which a key's secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    session: Session, name: str, scopes: Iterable[Scope | str]
) -> tuple[ApiKey, str]:
    """Make a key; the secret is returned once and only its hash is stored.

    Returns:
        The key row and its secret, ``"rsk_"`` followed by 43 URL-safe characters.

    Raises:
        ValueError: An unknown scope.
    """
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in {m.value for m in Scope}]
    if unknown:
        raise ValueError(f"Unknown scopes: {unknown!r}. Expected any of {[m.value for m in Scope]}")
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        prefix=secret[:API_KEY_DISPLAY_CHARS],
        key_hash=hash_api_key(secret),
        scopes=[Scope(s).value for s in wanted],
    )
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The unrevoked key whose secret this is, or ``None``; notes when it was last used."""
    if not secret.startswith(API_KEY_PREFIX):
        return None
    key = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret))
    ).one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.flush()
    return key


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key (idempotent); it no longer authenticates.

    Raises:
        RecordNotFound: No such key.
    """
    key = get_row(session, ApiKey, key_id, fresh=False)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key
