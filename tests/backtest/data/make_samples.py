"""Writes the sample bar files next to this script (run it to regenerate them; the tests only read them).

Two stocks over January 2024's XKRX trading days, seeded, valid KRX ticks. 005930 is suspended (거래정지)
on 2024-01-16: KRX and pykrx list that day with 시가/고가/저가 0, 거래량 0 and the previous 종가. The same
bars are written in every layout :mod:`autotrade.backtest.sources` reads:

- ``krx/005930.csv``, ``krx/000660.csv``: KRX [12003] 개별종목 시세 추이 CSV, CP949, newest day first;
- ``krx_daily/20240102.csv`` ...: KRX [12001] 전종목 시세 CSV, CP949, one file a day;
- ``pykrx_005930.csv``: a pykrx ``get_market_ohlcv`` frame saved with ``to_csv`` (UTF-8);
- ``fdr_000660.csv``: a FinanceDataReader frame with ``Adj Close`` (half the price: a 2:1 split adjusted);
- ``bars.csv``: the same bars in the standard layout (no row on the suspended day); ``scans.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
DAYS = pd.bdate_range("2024-01-02", "2024-01-31")  # XKRX traded every weekday of January 2024 but Jan 1
SUSPENDED = pd.Timestamp("2024-01-16")
STOCKS = {"005930": ("삼성전자", 78_000, 5_969_782_550), "000660": ("SK하이닉스", 140_000, 728_002_365)}


def bars() -> pd.DataFrame:
    rng = np.random.default_rng(2024)
    rows = []
    for code, (_, start, _) in STOCKS.items():
        close = start
        for day in DAYS:
            o = close + 100 * int(rng.integers(-8, 9))
            c = o + 100 * int(rng.integers(-15, 16))
            h = max(o, c) + 100 * int(rng.integers(0, 8))
            lo = min(o, c) - 100 * int(rng.integers(0, 8))
            v = int(rng.integers(5_000_000, 20_000_000))
            if code == "005930" and day == SUSPENDED:
                rows.append((day, code, 0, 0, 0, close, 0))
                continue
            rows.append((day, code, o, h, lo, c, v))
            close = c
    return pd.DataFrame(rows, columns=["date", "code", "open", "high", "low", "close", "volume"])


def krx_rows(frame: pd.DataFrame, code: str) -> pd.DataFrame:
    listed = STOCKS[code][2]
    prev = frame["close"].shift(1)
    change = (frame["close"] - prev).fillna(0).astype(int)
    rate = (100 * change / prev).fillna(0).round(2)
    return pd.DataFrame(
        {
            "종가": frame["close"],
            "대비": change,
            "등락률": rate,
            "시가": frame["open"],
            "고가": frame["high"],
            "저가": frame["low"],
            "거래량": frame["volume"],
            "거래대금": frame["volume"] * frame["close"],
            "시가총액": frame["close"] * listed,
            "상장주식수": listed,
        }
    )


def main() -> None:
    all_bars = bars()
    (HERE / "krx").mkdir(exist_ok=True)
    (HERE / "krx_daily").mkdir(exist_ok=True)
    per_stock = {}
    for code in STOCKS:
        one = all_bars[all_bars["code"] == code].reset_index(drop=True)
        krx = krx_rows(one, code)
        krx.insert(0, "일자", one["date"].dt.strftime("%Y/%m/%d"))
        per_stock[code] = krx
        krx.iloc[::-1].to_csv(HERE / "krx" / f"{code}.csv", index=False, encoding="cp949")
    for i, day in enumerate(DAYS):
        rows = []
        for code, (name, _, _) in STOCKS.items():
            r = per_stock[code].iloc[i]
            rows.append({"종목코드": code, "종목명": name, "시장구분": "KOSPI", "소속부": "",
                         **{k: r[k] for k in list(per_stock[code].columns)[1:]}})  # fmt: skip
        daily = pd.DataFrame(rows)
        daily.to_csv(HERE / "krx_daily" / f"{day:%Y%m%d}.csv", index=False, encoding="cp949")

    samsung = all_bars[all_bars["code"] == "005930"].set_index("date")
    pykrx = pd.DataFrame(
        {
            "시가": samsung["open"],
            "고가": samsung["high"],
            "저가": samsung["low"],
            "종가": samsung["close"],
            "거래량": samsung["volume"],
            "등락률": (100 * samsung["close"].pct_change()).fillna(0).round(2),
        }
    )
    pykrx.index.name = "날짜"
    pykrx.to_csv(HERE / "pykrx_005930.csv")

    hynix = all_bars[all_bars["code"] == "000660"].set_index("date")
    fdr = pd.DataFrame(
        {
            "Open": hynix["open"],
            "High": hynix["high"],
            "Low": hynix["low"],
            "Close": hynix["close"],
            "Adj Close": hynix["close"] / 2,
            "Volume": hynix["volume"],
            "Change": hynix["close"].pct_change().fillna(0).round(6),
        }
    )
    fdr.index.name = "Date"
    fdr.to_csv(HERE / "fdr_000660.csv")

    traded = all_bars[all_bars["open"] > 0].copy()
    traded["date"] = traded["date"].dt.strftime("%Y-%m-%d")
    traded.to_csv(HERE / "bars.csv", index=False)
    scans = traded[traded["date"].isin(["2024-01-03", "2024-01-10"])].copy()
    scans["name"] = scans["code"].map(lambda c: STOCKS[c][0])
    scans["score"] = [9.0, 8.0, 8.5, 7.5]
    scans["price"] = scans["close"]
    scans[["date", "code", "name", "score", "price"]].to_csv(HERE / "scans.csv", index=False)


if __name__ == "__main__":
    main()
