"""The exit book fires exactly what a naive loop over every strategy fires."""

import random
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from autotrade.domain.exit_book import ExitBook
from autotrade.domain.exits import ExitStrategy, PriceTick, SellEnded, SellFilled
from autotrade.domain.krx import KST, floor_to_tick

AT = datetime(2026, 11, 25, 10, 0, tzinfo=KST)


def test_tick_touches_only_crossed_levels() -> None:
    book = ExitBook()
    book.add("a", ExitStrategy.arm("005930", 70_000, 10))  # stop 66,500 preserve 72,800 tp 75,600
    book.add("b", ExitStrategy.arm("005930", 66_000, 4))  # stop 62,700 preserve 68,700 tp 71,300
    book.add("c", ExitStrategy.arm("000660", 70_000, 10))
    assert book.on_price("005930", 68_000, AT) == []
    fired = book.on_price("005930", 66_000, AT)  # a's stop only
    assert [(k, i.tier.value, i.quantity) for k, i in fired] == [("a", "STOP_LOSS", 10)]
    fired = book.on_price("005930", 71_300, AT)  # b gaps over preserve to take-profit; a's stop is working
    assert [(k, i.tier.value, i.quantity) for k, i in fired] == [("b", "TAKE_PROFIT", 4)]
    assert book.on_price("000660", 80_000, AT)[0][0] == "c"
    assert book.on_price("035720", 1_000, AT) == []  # unknown stock


def test_working_sell_is_parked_then_reindexed() -> None:
    book = ExitBook()
    book.add("a", ExitStrategy.arm("005930", 70_000, 10))
    [(_, p)] = book.on_price("005930", 72_800, AT)
    assert p.quantity == 5
    assert book.on_price("005930", 73_000, AT) == []  # preserve working
    book.apply("a", SellFilled(p.tier, 5, 72_800, AT))
    [(_, t)] = book.on_price("005930", 75_600, AT)
    assert t.quantity == 5


def _naive(strategies: dict[str, ExitStrategy], code: str, price: int) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key in sorted(strategies, key=repr):
        s = strategies[key]
        if s.code == code and not s.is_closed:
            out.extend((key, i) for i in s.apply(PriceTick(price, AT)))
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_book_matches_naive_loop(seed: int) -> None:
    """Random entries, price paths, fills and dead orders: the book and the naive loop agree at every step."""
    rng = random.Random(seed)
    codes = ["000001", "000002"]
    book = ExitBook()
    naive: dict[str, ExitStrategy] = {}
    for n in range(12):
        code = rng.choice(codes)
        entry = floor_to_tick(rng.randint(5_000, 100_000))
        qty = rng.randint(1, 9)
        book.add(f"s{n}", ExitStrategy.arm(code, entry, qty))
        naive[f"s{n}"] = ExitStrategy.arm(code, entry, qty)
    prices = {c: 50_000 for c in codes}
    for _ in range(80):
        code = rng.choice(codes)
        prices[code] = max(1_000, int(prices[code] * (1 + rng.uniform(-0.08, 0.08))))
        got = book.on_price(code, prices[code], AT)
        want = _naive(naive, code, prices[code])
        assert got == want
        for key, intent in got:
            # Fill some, let others die, so parked and committed entries are exercised.
            action = rng.random()
            event: SellFilled | SellEnded | None = None
            if action < 0.6:
                event = SellFilled(intent.tier, intent.quantity, prices[code], AT)
            elif action < 0.8:
                event = SellEnded(intent.tier, intent.quantity, AT)
            if event is not None:
                book.apply(key, event)
                naive[key].apply(event)
    assert {k: s.status for k, s in book} == {k: s.status for k, s in naive.items()}
