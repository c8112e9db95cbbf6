"""The daily bars the product saw (``daily_bars``): recorded after each close from the broker's quote, read
back by the monthly review.

Which codes: the ones the product cared about that day, that is the codes of the day's accepted scans and of
the three-tier strategies open at the close or closed this month (the backtest of the month may still hold a
position live has closed, and needs its bars to exit it). A stock only the backtest bought (a scan row live
did not buy) has a bar on the days it was scanned, not after: the review names such a day NO_BAR.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from autotrade.domain.exits import WATCHED_STATUSES
from autotrade.domain.krx import KST
from autotrade.store.db import Database
from autotrade.store.models import DailyBar, ScanBatch, ThreeTierStrategy

if TYPE_CHECKING:
    import pandas as pd

    from autotrade.broker.messages import Quote

log = logging.getLogger(__name__)

QUOTE = "quote"


class Quotes(Protocol):
    async def quote(self, code: str) -> Quote | None: ...


@dataclass(frozen=True, slots=True)
class BarRow:
    trading_day: date
    code: str
    open: int
    high: int
    low: int
    close: int
    volume: int
    source: str = QUOTE


@dataclass
class Recorded:
    """What one day's recording did: codes asked, bars written, codes without a bar and why."""

    trading_day: date
    codes: int = 0
    recorded: int = 0
    no_trade: list[str] = field(default_factory=list)  # the quote shows no trade today (suspended)
    failed: dict[str, str] = field(default_factory=dict)  # code -> the error of its quote

    def as_dict(self) -> dict[str, Any]:
        return {"trading_day": self.trading_day.isoformat(), "codes": self.codes, "recorded": self.recorded,
                "no_trade": list(self.no_trade), "failed": len(self.failed),
                "failed_codes": sorted(self.failed)}  # fmt: skip


def codes_of_day(db: Database, day: date) -> list[str]:
    """The day's accepted scan codes and the codes of strategies open now or closed from the first of the
    month to ``day``, sorted."""
    import json

    start = datetime.combine(day.replace(day=1), time(0), tzinfo=KST)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=KST)
    codes: set[str] = set()
    with db.unit_of_work() as s:
        for payload in s.scalars(
            sa.select(ScanBatch.payload).where(ScanBatch.trading_day == day, ScanBatch.status == "ACCEPTED")
        ):
            codes.update(str(row["code"]) for row in json.loads(payload or "[]"))
        codes.update(
            s.scalars(
                sa.select(ThreeTierStrategy.code).where(
                    sa.or_(
                        ThreeTierStrategy.status.in_(list(WATCHED_STATUSES)),
                        ThreeTierStrategy.closed_at.between(start, end),
                    ),
                    ThreeTierStrategy.entry_date <= day,
                )
            )
        )
    return sorted(codes)


def bar_of_quote(day: date, quote: Quote) -> BarRow | None:
    """The day's bar from a quote read after the close (the last price is the close); None when the quote
    shows no trade today (open, high or low of 0: a suspended stock)."""
    o, h, lo, c = int(quote.open), int(quote.high), int(quote.low), int(quote.price)
    if min(o, h, lo, c) <= 0:
        return None
    return BarRow(day, str(quote.code), o, h, lo, c, int(quote.volume))


async def record_bars(db: Database, quotes: Quotes, day: date, codes: Sequence[str]) -> Recorded:
    """Read each code's quote and upsert its bar; a failed quote is logged and counted, never raised."""
    from autotrade.broker.errors import BrokerError

    out = Recorded(day, codes=len(codes))
    rows: list[BarRow] = []
    for code in codes:
        try:
            quote = await quotes.quote(code)
        except (BrokerError, OSError, ValueError) as exc:  # one stock's quote; the others still count
            log.warning("daily bar of %s on %s not recorded: %s", code, day, exc)
            out.failed[code] = f"{type(exc).__name__}: {exc}"
            continue
        bar = bar_of_quote(day, quote) if quote is not None else None
        if bar is None:
            out.no_trade.append(code)
            continue
        rows.append(bar)
    save_bars(db, rows)
    out.recorded = len(rows)
    return out


def save_bars(db: Database, rows: Iterable[BarRow]) -> None:
    """Upsert bars by (trading day, code): a re-run replaces the day's bar with the latest quote."""
    values = [
        {"trading_day": r.trading_day, "code": r.code, "open": r.open, "high": r.high, "low": r.low,
         "close": r.close, "volume": r.volume, "source": r.source, "recorded_at": datetime.now(KST)}
        for r in rows
    ]  # fmt: skip
    if not values:
        return
    stmt = db.upsert(DailyBar)
    updated = ("open", "high", "low", "close", "volume", "source", "recorded_at")
    replace = {k: stmt.excluded[k] for k in updated}
    t = DailyBar.__table__.c
    with db.transaction() as conn:
        conn.execute(stmt.on_conflict_do_update(index_elements=[t.trading_day, t.code], set_=replace), values)


def read_bars(db: Database, first: date, last: date) -> list[BarRow]:
    """The recorded bars of ``first`` to ``last``, by day and code."""
    with db.unit_of_work() as s:
        rows = s.scalars(
            sa.select(DailyBar)
            .where(DailyBar.trading_day.between(first, last))
            .order_by(DailyBar.trading_day, DailyBar.code)
        ).all()
        return [
            BarRow(r.trading_day, r.code, int(r.open), int(r.high), int(r.low), int(r.close), int(r.volume),
                   r.source)
            for r in rows
        ]  # fmt: skip


def bars_frame(db: Database, first: date, last: date) -> pd.DataFrame:
    """The recorded bars in the backtester's standard layout (date, code, open, high, low, close, volume)."""
    import pandas as pd

    columns = ["date", "code", "open", "high", "low", "close", "volume"]
    return pd.DataFrame(
        [(r.trading_day.isoformat(), r.code, r.open, r.high, r.low, r.close, r.volume)
         for r in read_bars(db, first, last)],
        columns=columns,
    )  # fmt: skip
