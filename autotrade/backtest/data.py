"""Inputs: daily bars, scans and optional minute bars from CSV or Parquet, indexed for fast access.

Bars are held as one dense ``(day, stock, [open, high, low, close])`` int64 array over the timeline, zero
where a stock has no bar that day (not listed yet, suspended, delisted). A position or a scan row reads its
bar with one array index instead of searching a table, so the per-day work of a backtest is proportional to
the handful of positions and signals of the day, not to the size of the market.

Timeline: when every bar date lies within the span of the XKRX calendar (and ``use_krx_calendar`` is set),
the timeline is XKRX's trading days from the first bar date to the last (:mod:`autotrade.domain.calendar`),
and a bar dated on a day XKRX does not trade is an error. Otherwise it is the distinct bar dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from autotrade.backtest.fills import Bar, MinuteBar
from autotrade.domain import calendar
from autotrade.domain.krx import KST
from autotrade.domain.models import ScanRow

if TYPE_CHECKING:
    import pandas as pd

BAR_COLUMNS = ("date", "code", "open", "high", "low", "close")  # volume is optional and not used
SCAN_COLUMNS = ("date", "code", "name", "score", "price")
MINUTE_COLUMNS = ("datetime", "code", "open", "high", "low", "close")

CALENDAR_XKRX = "XKRX"
CALENDAR_DATA = "data"

OPEN, HIGH, LOW, CLOSE = 0, 1, 2, 3


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) file as a frame; codes stay text."""
    import pandas as pd

    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, dtype={"code": str, "name": str})
    raise ValueError(f"{path.name}: expected a .csv or .parquet file")


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}")


def _codes(series: pd.Series) -> pd.Series:
    """Stock codes as six-character text (a Parquet or spreadsheet may have stored 005930 as 5930)."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        # Keep the categories' integer codes (cheap to index); only the few category labels become text.
        labels = [
            str(c).zfill(6) if isinstance(c, int | np.integer) else str(c) for c in series.cat.categories
        ]
        return series.cat.rename_categories(labels)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype(str).str.zfill(6)
    return series.astype(str)


def _days(series: pd.Series) -> NDArray[np.datetime64]:
    import pandas as pd

    values = series if pd.api.types.is_datetime64_any_dtype(series.dtype) else pd.to_datetime(series)
    return np.asarray(values.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]"))


def _prices(series: pd.Series, what: str) -> NDArray[np.int64]:
    raw = series.to_numpy()
    if raw.dtype.kind == "f" and not (np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))):
        raise ValueError(f"{what}: prices must be whole won")
    return np.asarray(raw, dtype=np.int64)


def _to_dates(days: NDArray[np.datetime64]) -> tuple[date, ...]:
    return tuple(d.item() for d in days.astype("datetime64[D]"))


def distinct_days(days: NDArray[np.datetime64]) -> NDArray[np.datetime64]:
    """The sorted distinct dates of a ``datetime64[D]`` array, by counting (linear in the rows)."""
    if len(days) == 0:
        return days
    offsets = days.astype("datetime64[D]").astype(np.int64)
    first = int(offsets.min())
    present = np.flatnonzero(np.bincount(offsets - first)) + first
    return np.asarray(present.astype("datetime64[D]"))


def build_timeline(bar_days: Sequence[date], use_krx_calendar: bool = True) -> tuple[tuple[date, ...], str]:
    """The backtest's trading days and where they came from (``XKRX`` or ``data``)."""
    ordered = sorted(set(bar_days))
    if not ordered:
        raise ValueError("no bars")
    first, last = ordered[0], ordered[-1]
    if use_krx_calendar:
        try:
            calendar.is_trading_day(first)  # raises outside the calendar's span
            calendar.is_trading_day(last)
            in_range = True
        except calendar.CalendarRangeError:
            in_range = False
        if in_range:
            known = set(calendar.trading_days(first, last))
            stray = [d for d in ordered if d not in known]
            if stray:
                shown = ", ".join(str(d) for d in stray[:5])
                raise ValueError(
                    f"{len(stray)} bar date(s) are not XKRX trading days (e.g. {shown}); "
                    "fix the data or set use_krx_calendar = false"
                )
            return tuple(sorted(known)), CALENDAR_XKRX
    return tuple(ordered), CALENDAR_DATA


@dataclass(frozen=True, slots=True)
class BarFrame:
    """Bars as plain columns: the input of both the indexed engine and the reference loop."""

    days: NDArray[np.datetime64]  # datetime64[D]
    codes: Any  # text: a pandas Series or a numpy array
    open: NDArray[np.int64]
    high: NDArray[np.int64]
    low: NDArray[np.int64]
    close: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.close)


def bar_columns(frame: pd.DataFrame) -> BarFrame:
    """Validate a bars frame (columns, whole-won prices, low <= open/close <= high)."""
    _require(frame, BAR_COLUMNS, "bars")
    if frame.empty:
        raise ValueError("bars: no rows")
    cols = BarFrame(
        days=_days(frame["date"]),
        codes=_codes(frame["code"]),
        open=_prices(frame["open"], "bars"),
        high=_prices(frame["high"], "bars"),
        low=_prices(frame["low"], "bars"),
        close=_prices(frame["close"], "bars"),
    )
    return validate_bars(cols)


def validate_bars(cols: BarFrame) -> BarFrame:
    """Whole-won prices above zero, the low and high around the open and close."""
    bad = (
        (cols.low <= 0)
        | (cols.low > np.minimum(cols.open, cols.close))
        | (cols.high < np.maximum(cols.open, cols.close))
    )
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"bars: {int(bad.sum())} row(s) with non-positive prices or low/high not around open and close, "
            f"first: {cols.codes[i] if isinstance(cols.codes, np.ndarray) else cols.codes.iloc[i]} "
            f"on {cols.days[i]}"
        )
    return cols


def scan_rows(frame: pd.DataFrame) -> list[tuple[date, ScanRow]]:
    """Scan rows with their dates, in file order (``plan_buys`` orders them by score)."""
    _require(frame, SCAN_COLUMNS, "scans")
    days = _to_dates(_days(frame["date"])) if len(frame) else ()
    codes = _codes(frame["code"]).tolist()
    names = frame["name"].fillna("").astype(str).tolist()
    scores = frame["score"].astype(float).tolist()
    prices = _prices(frame["price"], "scans").tolist()
    rows = []
    for d, code, name, score, price in zip(days, codes, names, scores, prices, strict=True):
        if score != score:  # NaN
            raise ValueError(f"scans: {code} on {d} has no score")
        rows.append((d, ScanRow(code=code, name=name, score=score, price=price)))
    return rows


def minute_bars(frame: pd.DataFrame | None) -> dict[tuple[str, date], tuple[MinuteBar, ...]]:
    """Minute bars by (code, KST trading day), in time order. Naive times are taken as KST."""
    import pandas as pd

    if frame is None or frame.empty:
        return {}
    _require(frame, MINUTE_COLUMNS, "minute bars")
    stamps = pd.to_datetime(frame["datetime"])
    stamps = stamps.dt.tz_localize(KST) if stamps.dt.tz is None else stamps.dt.tz_convert(KST)
    out: dict[tuple[str, date], list[MinuteBar]] = {}
    cols = [_prices(frame[c], "minute bars").tolist() for c in ("open", "high", "low", "close")]
    for ts, code, o, h, lo, c in zip(
        stamps.dt.to_pydatetime(), _codes(frame["code"]).tolist(), *cols, strict=True
    ):
        if not (0 < lo <= min(o, c) and h >= max(o, c)):
            raise ValueError(f"minute bars: {code} at {ts}: low/high not around open and close")
        at: datetime = ts
        out.setdefault((code, at.date()), []).append(MinuteBar(at, o, h, lo, c))
    return {k: tuple(sorted(v, key=lambda m: m.at)) for k, v in out.items()}


@dataclass(frozen=True, eq=False)
class MarketData:
    """Everything a backtest reads, indexed by (day, stock)."""

    days: tuple[date, ...]
    codes: tuple[str, ...]
    ohlc: NDArray[np.int64]  # (days, codes, 4); 0 where there is no bar
    scans: tuple[tuple[ScanRow, ...], ...]  # per day of the timeline
    calendar: str
    bars: int
    scans_outside: int = 0  # scan rows dated outside the timeline
    minutes: dict[tuple[str, date], tuple[MinuteBar, ...]] = field(default_factory=dict)
    code_index: dict[str, int] = field(default_factory=dict)
    last_close: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    def __post_init__(self) -> None:
        if not self.code_index:
            self.code_index.update({c: i for i, c in enumerate(self.codes)})
        if self.last_close.shape != self.ohlc.shape[:2]:
            object.__setattr__(self, "last_close", forward_filled_closes(self.ohlc))

    @classmethod
    def from_frames(
        cls,
        bars: pd.DataFrame,
        scans: pd.DataFrame,
        minutes: pd.DataFrame | None = None,
        *,
        use_krx_calendar: bool = True,
    ) -> MarketData:
        import pandas as pd

        cols = bar_columns(bars)
        code_idx, code_values = pd.factorize(cols.codes, sort=True)
        return cls.from_columns(
            cols,
            np.asarray(code_idx, dtype=np.int64),
            tuple(str(c) for c in code_values),
            scan_rows(scans),
            minute_bars(minutes),
            use_krx_calendar=use_krx_calendar,
        )

    @classmethod
    def from_columns(
        cls,
        cols: BarFrame,
        code_idx: NDArray[np.int64],
        codes: tuple[str, ...],
        scans: Sequence[tuple[date, ScanRow]],
        minutes: dict[tuple[str, date], tuple[MinuteBar, ...]],
        *,
        use_krx_calendar: bool = True,
    ) -> MarketData:
        """Validated bar columns with each row's stock index into the sorted ``codes``."""
        days, source = build_timeline(_to_dates(distinct_days(cols.days)), use_krx_calendar)
        day_axis = np.array(days, dtype="datetime64[D]")
        day_idx = np.searchsorted(day_axis, cols.days)
        # Counting sort on the (day, stock) cell: O(rows), where np.unique would sort or hash millions.
        key = day_idx.astype(np.int64) * len(codes) + code_idx
        cells = len(days) * len(codes)
        if len(key) > cells or int(np.bincount(key, minlength=cells).max()) > 1:
            raise ValueError("bars: more than one bar for a stock on a day")
        ohlc = np.zeros((len(days), len(codes), 4), dtype=np.int64)
        flat = ohlc.reshape(cells, 4)
        for column, values in enumerate((cols.open, cols.high, cols.low, cols.close)):
            flat[key, column] = values
        return cls(
            days=days,
            codes=codes,
            ohlc=ohlc,
            calendar=source,
            bars=len(cols),
            minutes=minutes,
            **scans_by_day(scans, days),
        )

    @classmethod
    def from_arrays(
        cls,
        days: Sequence[date],
        codes: Sequence[str],
        ohlc: NDArray[np.int64],
        scans: Sequence[tuple[date, ScanRow]],
        calendar_source: str,
    ) -> MarketData:
        """Already-dense data (the synthetic market): ``ohlc`` is (days, codes, 4)."""
        if ohlc.shape != (len(days), len(codes), 4):
            raise ValueError("ohlc must be shaped (days, codes, 4)")
        return cls(
            days=tuple(days),
            codes=tuple(codes),
            ohlc=ohlc,
            calendar=calendar_source,
            bars=int(np.count_nonzero(ohlc[:, :, CLOSE])),
            **scans_by_day(scans, tuple(days)),
        )

    def bars_between(self, start: int, end: int) -> int:
        """Bars on days ``start..end`` (end exclusive)."""
        if start == 0 and end == len(self.days):
            return self.bars
        return int(np.count_nonzero(self.ohlc[start:end, :, CLOSE]))

    def until(self, end: int) -> MarketData:
        """The data of the first ``end`` days only (array views, no copy): what was known on day end - 1."""
        if not 0 < end <= len(self.days):
            raise ValueError(f"end {end} outside 1..{len(self.days)}")
        if end == len(self.days):
            return self
        last = self.days[end - 1]
        return MarketData(
            days=self.days[:end],
            codes=self.codes,
            ohlc=self.ohlc[:end],
            scans=self.scans[:end],
            calendar=self.calendar,
            bars=int(np.count_nonzero(self.ohlc[:end, :, CLOSE])),
            minutes={k: v for k, v in self.minutes.items() if k[1] <= last},
            code_index=self.code_index,
            last_close=self.last_close[:end],
        )

    def bar(self, day: int, code: str) -> Bar | None:
        c = self.code_index.get(code)
        if c is None:
            return None
        o, h, lo, cl = self.ohlc[day, c].tolist()
        return Bar(o, h, lo, cl) if cl else None

    def close_before(self, day: int, code: str) -> int | None:
        """The stock's last close strictly before ``day`` (None before its first bar)."""
        if day == 0:
            return None
        return self.close_on_or_before(day - 1, code)

    def close_on_or_before(self, day: int, code: str) -> int | None:
        c = self.code_index.get(code)
        if c is None:
            return None
        close = int(self.last_close[day, c])
        return close if close else None


def forward_filled_closes(ohlc: NDArray[np.int64]) -> NDArray[np.int64]:
    """(days, codes): each stock's last close on or before the day, 0 before its first bar."""
    close = ohlc[:, :, CLOSE]
    if close.size == 0:
        return np.zeros(close.shape, dtype=np.int64)
    rows = np.arange(close.shape[0], dtype=np.int64)[:, None]
    last = np.maximum.accumulate(np.where(close > 0, rows, -1), axis=0)
    filled = np.take_along_axis(close, np.maximum(last, 0), axis=0)
    filled[last < 0] = 0
    return np.asarray(filled, dtype=np.int64)


def scans_by_day(rows: Sequence[tuple[date, ScanRow]], days: tuple[date, ...]) -> dict[str, Any]:
    index = {d: i for i, d in enumerate(days)}
    per_day: list[list[ScanRow]] = [[] for _ in days]
    outside = 0
    for d, row in rows:
        i = index.get(d)
        if i is None:
            outside += 1
        else:
            per_day[i].append(row)
    return {"scans": tuple(tuple(r) for r in per_day), "scans_outside": outside}


def _plain_csv(path: Path, columns: Sequence[str]) -> dict[str, list[str]] | None:
    """The named columns of a plain UTF-8 CSV as text, or None when it is not one (or lacks them)."""
    import csv

    if not path.name.lower().endswith(".csv"):
        return None
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or not set(columns) <= set(header):
                return None
            where = [header.index(c) for c in columns]
            out: list[list[str]] = [[] for _ in columns]
            for row in reader:
                if not row:
                    continue
                for k, i in enumerate(where):
                    out[k].append(row[i])
    except (UnicodeDecodeError, IndexError, csv.Error):
        return None
    return dict(zip(columns, out, strict=True))


def read_plain_csv(bars: Path, scans: Path, *, use_krx_calendar: bool = True) -> MarketData | None:
    """Bars and scans in the standard layout, as plain CSV with ISO dates and whole-won prices, read without
    pandas: importing pandas takes longer than a backtest of a small market. None when either file is
    anything else (another layout, Parquet, decimals, blanks): read those with :func:`read_table`, whose
    checks and messages then apply. Gives the same market as ``from_frames`` on ``read_table``'s frames."""
    b = _plain_csv(bars, BAR_COLUMNS)
    sc = _plain_csv(scans, SCAN_COLUMNS)
    if b is None or sc is None or not b["date"]:
        return None
    try:
        cols = BarFrame(
            days=np.array(b["date"], dtype="datetime64[D]"),
            codes=np.array(b["code"], dtype=str),
            open=np.array(b["open"], dtype=np.int64),
            high=np.array(b["high"], dtype=np.int64),
            low=np.array(b["low"], dtype=np.int64),
            close=np.array(b["close"], dtype=np.int64),
        )
        scan_days = _to_dates(np.array(sc["date"], dtype="datetime64[D]"))
        scores = [float(x) for x in sc["score"]]
        prices = [int(x) for x in sc["price"]]
    except ValueError:
        return None
    if any(x != x for x in scores) or any(len(d) != 10 for d in (*b["date"][:1], *sc["date"][:1])):
        return None  # no score, or dates with times: the pandas path decides
    validate_bars(cols)
    codes, code_idx = np.unique(cols.codes, return_inverse=True)
    rows = [
        (d, ScanRow(code=code, name=name, score=score, price=price))
        for d, code, name, score, price in zip(scan_days, sc["code"], sc["name"], scores, prices, strict=True)
    ]
    return MarketData.from_columns(
        cols,
        np.asarray(code_idx, dtype=np.int64).ravel(),
        tuple(str(c) for c in codes),
        rows,
        {},
        use_krx_calendar=use_krx_calendar,
    )
