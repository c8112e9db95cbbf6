"""Limits that stop attackers, not users.

* :class:`LoginLimits`, kept in the database so that every API process sees the same counts:
  - per account (the email, known or not): ``account_free`` failures are free, then each further failure
    blocks the account for 1, 2, 4 ... seconds, never more than ``account_max_delay`` (30 s): an attack
    slows guessing on one account to one guess per 30 s, and the right password gets in at most 30 s after
    the last wrong guess, whoever made it; a successful login clears the count;
  - per client address, failed logins across every email (``client_failures`` in ``client_window``):
    password spraying from one address stops; other addresses (the real users) are not affected;
  - per client address, sign-ups (``signups`` in ``signup_window``).
  Refused attempts are not counted (they cost the attacker nothing, and cost the table nothing). Rows
  whose window is over and whose block has passed are deleted at most every ``prune_seconds``, so the
  table holds only the keys active in the last window.
* :func:`client_address`: the peer's address, or, only when the peer is one of the configured trusted
  proxies, the first untrusted address of ``X-Forwarded-For`` read from the right.
* :class:`BodyLimit`: a client cannot make the server read and parse megabytes before it is told no (an
  anonymous one included). A declared length over the bound is refused before anything is read; an
  undeclared (chunked) body is cut off as soon as it passes the bound.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotrade.store.db import Database

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(setting: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in setting.split(",") if p.strip())


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The address a request is limited by. ``X-Forwarded-For`` is read only from a trusted proxy, from its
    right end (the hop the proxy itself added), skipping further trusted proxies; a malformed hop stops the
    walk at the last trusted one, so a client cannot pick its own address."""
    address = peer or "?"
    if not forwarded_for or not _in(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address
        if not _in(hop, trusted):
            return hop
        address = hop
    return address


class LoginLimits:
    """Login and sign-up limits with their state in ``auth_throttle`` (see the module's docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        account_free: int = 5,
        account_max_delay: float = 30.0,
        account_window: float = 900.0,
        client_failures: int = 30,
        client_window: float = 900.0,
        signups: int = 5,
        signup_window: float = 3600.0,
        prune_seconds: float = 60.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.account_free, self.account_max_delay = account_free, account_max_delay
        self.account_window = account_window
        self.client_failures, self.client_window = client_failures, client_window
        self.signups, self.signup_window = signups, signup_window
        self.prune_seconds = prune_seconds
        self.clock = clock or (lambda: datetime.now(UTC))
        self._pruned_at = 0.0

    def login_refusal(self, email: str, client: str) -> float | None:
        """Seconds to wait before this login may be tried, or None when it may be tried now."""
        from autotrade.store.models import AuthThrottle

        now = self.clock()
        with self.db.unit_of_work() as s:
            acct = s.get(AuthThrottle, _account(email))
            cli = s.get(AuthThrottle, _client(client))
            waits = []
            if acct is not None and acct.blocked_until is not None and acct.blocked_until > now:
                waits.append((acct.blocked_until - now).total_seconds())
            if cli is not None and cli.blocked_until is not None and cli.blocked_until > now:
                waits.append((cli.blocked_until - now).total_seconds())
        return max(waits) if waits else None

    def login_failed(self, email: str, client: str) -> None:
        def account_block(count: int) -> float | None:
            extra = count - self.account_free - 1
            return None if extra < 0 else min(self.account_max_delay, 2.0**extra)

        def client_block(count: int) -> float | None:
            return self.client_window if count >= self.client_failures else None

        self._count(_account(email), self.account_window, account_block)
        self._count(_client(client), self.client_window, client_block)

    def login_succeeded(self, email: str) -> None:
        from autotrade.store.models import AuthThrottle

        with self.db.unit_of_work() as s:
            row = s.get(AuthThrottle, _account(email))
            if row is not None:
                s.delete(row)

    def signup_allowed(self, client: str) -> bool:
        """Count a sign-up from ``client``; False (and not counted) past the limit."""
        from autotrade.store.models import AuthThrottle

        now = self.clock()
        with self.db.unit_of_work() as s:
            row = s.get(AuthThrottle, "signup|" + client)
            if row is not None and row.blocked_until is not None and row.blocked_until > now:
                return False

        def block(count: int) -> float | None:
            return self.signup_window if count >= self.signups else None

        self._count("signup|" + client, self.signup_window, block)
        return True

    def _count(self, key: str, window: float, block: Callable[[int], float | None]) -> None:
        import sqlalchemy as sa

        from autotrade.store.models import AuthThrottle

        now = self.clock()
        for attempt in range(2):  # a concurrent first insert of the same key: read it again
            try:
                with self.db.unit_of_work() as s:
                    row = s.scalar(sa.select(AuthThrottle).where(AuthThrottle.key == key).with_for_update())
                    if row is None:
                        row = AuthThrottle(key=key, count=0, window_start=now)
                        s.add(row)
                    elif row.window_start <= now - timedelta(seconds=window):
                        row.count, row.window_start = 0, now
                    row.count += 1
                    seconds = block(row.count)
                    row.blocked_until = now + timedelta(seconds=seconds) if seconds is not None else None
                break
            except sa.exc.IntegrityError:
                if attempt:
                    raise
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        import sqlalchemy as sa

        from autotrade.store.models import AuthThrottle

        if time.monotonic() - self._pruned_at < self.prune_seconds:
            return
        self._pruned_at = time.monotonic()
        oldest = now - timedelta(seconds=max(self.account_window, self.client_window, self.signup_window))
        with self.db.unit_of_work() as s:
            s.execute(
                sa.delete(AuthThrottle).where(
                    AuthThrottle.window_start < oldest,
                    sa.or_(AuthThrottle.blocked_until.is_(None), AuthThrottle.blocked_until < now),
                )
            )


def _account(email: str) -> str:
    return "account|" + email.strip().lower()[:255]


def _client(client: str) -> str:
    return "client|" + client[:64]


Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware answering 413 to a request body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body too large: at most ' + str(self.max_bytes).encode() + b' bytes"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
