"""A seeded universe of KRX-like stocks for the simulator."""

from __future__ import annotations

import random

from autotrade.domain.krx import floor_to_tick
from autotrade.sim.market import MarketEngine

NAMES = [
    "삼성전자",
    "SK하이닉스",
    "LG에너지솔루션",
    "현대차",
    "기아",
    "NAVER",
    "카카오",
    "셀트리온",
    "POSCO홀딩스",
    "KB금융",
    "신한지주",
    "LG화학",
    "삼성SDI",
    "현대모비스",
    "한국전력",
    "삼성물산",
    "SK텔레콤",
    "KT&G",
    "하나금융지주",
    "LG전자",
    "에코프로",
    "알테오젠",
    "HLB",
    "리가켐바이오",
    "휴젤",
    "클래시스",
    "펄어비스",
]


def seed_universe(engine: MarketEngine, count: int, seed: int) -> list[str]:
    """Add ``count`` stocks with seeded codes, names and previous closes; returns their codes."""
    rng = random.Random(seed * 7919 + count)
    codes = []
    for i in range(count):
        code = f"{(i * 7 + 100) % 1000:03d}{rng.randint(0, 999):03d}"
        while code in engine.stocks:
            code = f"{rng.randint(0, 999999):06d}"
        name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else f" {i // len(NAMES) + 1}우")
        engine.add_stock(code, name, floor_to_tick(int(rng.lognormvariate(10.3, 0.9))))
        codes.append(code)
    return codes
