"""Access tokens per app key: issue when needed, reuse until shortly before expiry, refresh once on reject.

``load_credentials`` is the expensive, audited step (the vault decrypts the user's keys through KMS), so
the manager calls it only when it must talk to au10001/au10002; a cached token never touches it. DESIGN 3.3
targets one KMS Decrypt per user per trading day, which a 24 h token with a 10 minute margin meets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import SecretStr

from autotrade.broker.messages import Credentials, IssuedToken

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class TokenProvider(Protocol):
    """Where a session gets the bearer token for its app key."""

    async def token(self) -> str:
        """A token believed valid now."""
        ...

    async def invalidate(self, token: str) -> None:
        """The broker rejected ``token``; the next :meth:`token` must not return it."""
        ...

    async def revoke(self) -> None:
        """Revoke the current token at the broker (key disabled) and forget it."""
        ...


class FixedToken:
    """A :class:`TokenProvider` offering exactly one token and nothing else: for a single check made with a
    token just issued (a registration's validation) or one under test."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    async def invalidate(self, token: str) -> None:
        return None

    async def revoke(self) -> None:
        return None


class TokenIssuer(Protocol):
    """The token TRs of :class:`~autotrade.broker.client.KiwoomClient`."""

    async def issue_token(self, app_key: SecretStr | str, app_secret: SecretStr | str) -> IssuedToken: ...

    async def revoke_token(
        self, app_key: SecretStr | str, app_secret: SecretStr | str, token: SecretStr | str
    ) -> None: ...


class TokenManager:
    """The default :class:`TokenProvider`: one cached token per app key, concurrent refreshes deduplicated."""

    def __init__(
        self,
        client: TokenIssuer,
        key_id: str,
        load_credentials: Callable[[], Awaitable[Credentials]],
        *,
        refresh_margin_seconds: float = 600,
        clock: Clock = utc_now,
    ) -> None:
        self.key_id = key_id
        self._client = client
        self._load_credentials = load_credentials
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._current: IssuedToken | None = None
        self._refresh_at: datetime | None = None
        self.issued_count = 0

    def __repr__(self) -> str:
        return f"TokenManager(key_id={self.key_id!r}, refresh_at={self._refresh_at})"

    async def token(self) -> str:
        cached = self._fresh()
        if cached is not None:
            return cached
        async with self._lock:
            # Whoever held the lock before us may have issued one already.
            cached = self._fresh()
            if cached is not None:
                return cached
            return await self._issue()

    async def invalidate(self, token: str) -> None:
        # Compare with the token the caller used: when several requests fail with the same old token,
        # only the first forgets it and the rest reuse the replacement instead of issuing again.
        current = self._current
        if current is not None and current.token.get_secret_value() == token:
            log.info("token for key %s rejected by the broker; will issue a new one", self.key_id)
            self._current = None
            self._refresh_at = None

    async def revoke(self) -> None:
        async with self._lock:
            current, self._current, self._refresh_at = self._current, None, None
            if current is None:
                return
            credentials = await self._load_credentials()
            await self._client.revoke_token(credentials.app_key, credentials.app_secret, current.token)
            log.info("token for key %s revoked", self.key_id)

    def _fresh(self) -> str | None:
        if self._current is None or self._refresh_at is None or self._clock() >= self._refresh_at:
            return None
        return self._current.token.get_secret_value()

    async def _issue(self) -> str:
        credentials = await self._load_credentials()
        issued = await self._client.issue_token(credentials.app_key, credentials.app_secret)
        now = self._clock()
        self._current = issued
        self._refresh_at = issued.expires_at - self._effective_margin(now, issued.expires_at)
        self.issued_count += 1
        log.info("token issued for key %s, valid until %s", self.key_id, issued.expires_at.isoformat())
        return issued.token.get_secret_value()

    def _effective_margin(self, now: datetime, expires_at: datetime) -> timedelta:
        # A token shorter-lived than twice the margin (a simulator, a clock skew) would otherwise be
        # "due for refresh" the moment it arrives and be re-issued on every call; use half its life.
        lifetime = expires_at - now
        return min(self._margin, max(lifetime / 2, timedelta(0)))
