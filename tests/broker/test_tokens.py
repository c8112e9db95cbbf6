"""TokenManager on a test clock with a stub issuer: reuse, refresh margin, short-lived tokens, invalidate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from autotrade.broker.messages import IssuedToken
from autotrade.broker.tokens import TokenManager
from tests.broker.conftest import CredentialLoader

T0 = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class StubIssuer:
    def __init__(self, clock: Clock, lifetime: timedelta = timedelta(hours=24)) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.revoked: list[str] = []

    async def issue_token(self, app_key: SecretStr | str, app_secret: SecretStr | str) -> IssuedToken:
        await asyncio.sleep(0.01)  # let concurrent callers pile up on the lock
        token = f"T{len(self.issued) + 1}"
        self.issued.append(token)
        return IssuedToken(token=SecretStr(token), expires_at=self.clock() + self.lifetime)

    async def revoke_token(
        self, app_key: SecretStr | str, app_secret: SecretStr | str, token: SecretStr | str
    ) -> None:
        self.revoked.append(token.get_secret_value() if isinstance(token, SecretStr) else token)


def manager(
    lifetime: timedelta = timedelta(hours=24),
) -> tuple[TokenManager, StubIssuer, Clock, CredentialLoader]:
    clock = Clock()
    issuer = StubIssuer(clock, lifetime)
    loader = CredentialLoader()
    return (
        TokenManager(issuer, "alice", loader, refresh_margin_seconds=600, clock=clock),
        issuer,
        clock,
        loader,
    )


async def test_reused_until_margin_before_expiry() -> None:
    tm, _issuer, clock, loader = manager()
    assert await tm.token() == "T1"
    clock.now = T0 + timedelta(hours=23, minutes=49, seconds=59)
    assert await tm.token() == "T1"
    assert loader.calls == 1
    clock.now = T0 + timedelta(hours=23, minutes=50)  # expiry minus the 10 minute margin
    assert await tm.token() == "T2"
    assert loader.calls == 2


async def test_short_lived_token_uses_half_its_life_as_margin() -> None:
    tm, _issuer, clock, _ = manager(lifetime=timedelta(minutes=4))
    assert await tm.token() == "T1"
    clock.now = T0 + timedelta(minutes=1, seconds=59)
    assert await tm.token() == "T1"  # not re-issued on every call
    clock.now = T0 + timedelta(minutes=2)
    assert await tm.token() == "T2"


async def test_concurrent_callers_share_one_issue() -> None:
    tm, issuer, _, loader = manager()
    assert set(await asyncio.gather(*(tm.token() for _ in range(10)))) == {"T1"}
    assert issuer.issued == ["T1"] and loader.calls == 1


async def test_invalidate_only_forgets_the_token_that_failed() -> None:
    tm, issuer, _, _ = manager()
    old = await tm.token()
    await tm.invalidate(old)
    new = await tm.token()
    await tm.invalidate(old)  # a late failure with the old token must not discard the new one
    assert await tm.token() == new == "T2"
    assert issuer.issued == ["T1", "T2"]


async def test_revoke() -> None:
    tm, issuer, _, loader = manager()
    await tm.revoke()  # nothing to revoke: no broker call, no decrypt
    assert issuer.revoked == [] and loader.calls == 0
    await tm.token()
    await tm.revoke()
    assert issuer.revoked == ["T1"]
    assert await tm.token() == "T2"


def test_repr_has_no_token() -> None:
    tm, _, _, _ = manager()
    assert "alice" in repr(tm)
