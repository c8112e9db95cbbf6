"""Daily bars in the layouts Korean traders have, as the backtest's ``date,code,open,high,low,close``.

Layouts recognised by their headers (:func:`normalise_bars`):

``standard``
    ``date, code, open, high, low, close[, volume]``: the backtester's own layout, passed through.
``krx``
    KRX 정보데이터시스템 (data.krx.co.kr) [12003] 개별종목 시세 추이, CSV download: one stock, one row a day,
    ``일자, 종가, 대비, 등락률, 시가, 고가, 저가, 거래량, 거래대금, 시가총액, 상장주식수``. The file holds no
    stock code: it is given by the caller or taken from a file name ending in it (``005930.csv``,
    ``pykrx_005930.csv``).
``krx-daily``
    KRX [12001] 전종목 시세, CSV download: every stock on one day, ``종목코드, 종목명, 시장구분, 소속부,
    종가, 대비, 등락률, 시가, 고가, 저가, 거래량, ...``. The file holds no date: it is given by the caller or
    taken from an eight-digit file name (``20240102.csv``).
``pykrx``
    ``pykrx.stock.get_market_ohlcv(from, to, ticker)``: index ``날짜``, columns ``시가, 고가, 저가, 종가,
    거래량, 등락률`` (newer versions add ``거래대금``). pykrx adjusts for splits and rights by default
    (``adjusted=True``); the frame does not say which it is, so the caller must know.
``fdr``
    ``FinanceDataReader.DataReader(code, start, end)`` on KRX codes: ``Date`` index, columns ``Open, High,
    Low, Close, Volume, Change``. Some of its sources add ``Adj Close``: with ``adjusted=True`` the open, high
    and low are scaled by ``Adj Close / Close`` and the close replaced by ``Adj Close``, rounded to whole won
    (adjusted prices need not lie on KRX ticks; the exit levels are still computed from the adjusted buy).

A frame saved with ``to_csv()`` keeps its index as the first column, so the same layouts load from CSV and
Parquet files as from live frames. Encoding of CSV files: UTF-8 (with or without BOM) is tried first, then
CP949, the superset of EUC-KR in which KRX's downloads come.

Suspended days: KRX and pykrx list a day without trades (거래정지) with 시가, 고가 and 저가 of 0 and the
previous 종가. Such rows are dropped, so the stock has no bar that day: the engine holds its position
through it and resumes exits at the next bar. A row of zero volume with real prices is kept.

UNCONFIRMED (no real export was available here; the sample files in ``tests/backtest/data`` are generated):
the KRX CSV's exact date format (``2024/01/02`` is assumed; ``2024-01-02`` and ``20240102`` also parse),
whether numbers carry thousands separators (both are accepted), and the zero open/high/low marking of
suspended days in KRX's CSV (it is what KRX's screen and pykrx show).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

STANDARD = ("date", "code", "open", "high", "low", "close")

KRX_COLUMNS = {
    "일자": "date",
    "시가": "open",
    "고가": "high",
    "저가": "low",
    "종가": "close",
    "거래량": "volume",
}
KRX_DAILY_COLUMNS = {
    "종목코드": "code",
    "시가": "open",
    "고가": "high",
    "저가": "low",
    "종가": "close",
    "거래량": "volume",
}
PYKRX_COLUMNS = {
    "날짜": "date",
    "시가": "open",
    "고가": "high",
    "저가": "low",
    "종가": "close",
    "거래량": "volume",
}
FDR_COLUMNS = {
    "Date": "date",
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Volume": "volume",
}

LAYOUTS = ("standard", "krx", "krx-daily", "pykrx", "fdr")
ENCODINGS = ("utf-8-sig", "cp949")


def detect_layout(columns: list[str]) -> str:
    """The layout a frame's columns (index included, as ``reset_index`` gives them) are in."""
    cols = set(columns)
    if set(STANDARD) <= cols:
        return "standard"
    if {"일자", "시가", "고가", "저가", "종가"} <= cols:
        return "krx"
    if {"종목코드", "시가", "고가", "저가", "종가"} <= cols:
        return "krx-daily"
    if {"날짜", "시가", "고가", "저가", "종가"} <= cols:
        return "pykrx"
    if {"Date", "Open", "High", "Low", "Close"} <= cols:
        return "fdr"
    raise ValueError(
        "bars: unknown column layout "
        f"({', '.join(columns[:8])}); expected date,code,open,high,low,close or a KRX, pykrx or "
        "FinanceDataReader layout"
    )


def _numbers(series: pd.Series) -> pd.Series:
    if series.dtype == object:
        series = series.astype(str).str.replace(",", "", regex=False).str.strip()
    return pd.to_numeric(series)


def _with_index(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame whose dates sit in a named index (pykrx, FinanceDataReader) with the index as a column."""
    if frame.index.name in ("날짜", "Date", "일자"):
        return frame.reset_index()
    return frame


def normalise_bars(
    frame: pd.DataFrame,
    *,
    code: str | None = None,
    day: str | None = None,
    layout: str | None = None,
    adjusted: bool = True,
) -> pd.DataFrame:
    """``frame`` in any of :data:`LAYOUTS` as ``date, code, open, high, low, close, volume``.

    ``code`` names the stock of a one-stock layout (krx, pykrx, fdr) without a code column; ``day`` the date
    of a krx-daily file. Suspended-day rows (open, high or low of 0) are dropped.
    """
    frame = _with_index(frame)
    kind = layout or detect_layout([str(c) for c in frame.columns])
    if kind == "standard":
        return frame
    mapping = {
        "krx": KRX_COLUMNS,
        "krx-daily": KRX_DAILY_COLUMNS,
        "pykrx": PYKRX_COLUMNS,
        "fdr": FDR_COLUMNS,
    }[kind]
    out = pd.DataFrame({new: frame[old] for old, new in mapping.items() if old in frame.columns})
    if "code" not in out.columns:
        if "code" in frame.columns:
            out["code"] = frame["code"]
        elif code is None:
            raise ValueError(f"bars ({kind} layout): no stock code; name the file after it (005930.csv)")
        else:
            out["code"] = code
    if "date" not in out.columns:
        if day is None:
            raise ValueError("bars (krx-daily layout): no date; name the file after it (20240102.csv)")
        out["date"] = day
    for column in ("open", "high", "low", "close", "volume"):
        if column in out.columns:
            out[column] = _numbers(out[column])
    if kind == "fdr" and adjusted and "Adj Close" in frame.columns:
        factor = _numbers(frame["Adj Close"]) / out["close"]
        for column in ("open", "high", "low"):
            out[column] = out[column] * factor
        out["close"] = _numbers(frame["Adj Close"])
    for column in ("open", "high", "low", "close"):
        if out[column].dtype.kind == "f" and out[column].notna().all():
            out[column] = out[column].round().astype("int64")
    suspended = (out["open"] <= 0) | (out["high"] <= 0) | (out["low"] <= 0)
    out = out.loc[~suspended]
    out["date"] = pd.to_datetime(out["date"].astype(str).str.replace("/", "-", regex=False))
    out["code"] = out["code"].astype(str).str.zfill(6)
    columns = [c for c in (*STANDARD, "volume") if c in out.columns]
    return out[columns].sort_values(["date", "code"], kind="stable").reset_index(drop=True)


def read_csv_any(path: Path) -> pd.DataFrame:
    """A CSV in UTF-8 or CP949 (EUC-KR), codes and dates kept as text."""
    raw = path.read_bytes()
    for encoding in ENCODINGS:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        text_columns = {c: str for c in ("code", "종목코드", "일자", "날짜", "date", "Date", "name")}
        return pd.read_csv(io.StringIO(text), dtype=text_columns)
    raise ValueError(f"{path.name}: neither UTF-8 nor CP949 text")


def _read_one(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith(".csv"):
        return read_csv_any(path)
    if name.endswith(".csv.gz"):
        return pd.read_csv(path, dtype={"code": str, "name": str})
    raise ValueError(f"{path.name}: expected a .csv or .parquet file")


def read_bars(path: Path, *, adjusted: bool = True) -> pd.DataFrame:
    """Bars from a file or a directory of files (one stock or one day each), in any of :data:`LAYOUTS`."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no files")
    frames = []
    for f in files:
        stem = f.name.split(".")[0]
        code_match = re.search(r"(?:^|[_-])([0-9][0-9A-Z]{5})$", stem)
        day_match = re.search(r"(?:^|[_-])(\d{8})$", stem)
        code = code_match.group(1) if code_match else None
        day = day_match.group(1) if day_match else None
        frames.append(normalise_bars(_read_one(f), code=code, day=day, adjusted=adjusted))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def bars_from_frames(frames: Mapping[str, pd.DataFrame], *, adjusted: bool = True) -> pd.DataFrame:
    """Bars from one live frame per stock (pykrx or FinanceDataReader), keyed by stock code."""
    parts = [normalise_bars(f, code=code, adjusted=adjusted) for code, f in frames.items()]
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["date", "code"], kind="stable").reset_index(drop=True)
