"""The three-tier exit as a state machine.

Position of Q shares bought at average price P:

- stop-loss at P x (1 - 5%): sell everything still held, cancel the other tiers;
- preserve at P x (1 + 4%): sell floor(Q/2) (skipped when Q = 1), then the stop covers what remains;
- take-profit at P x (1 + 8%): sell everything that remains; all tiers complete.

Trigger prices are snapped UP to a valid KRX tick (:func:`tier_prices`): a stop at or above the configured
level fires no later (a smaller loss), and preserve / take-profit at or above their levels never take less
gain than configured. So no tier ever fires at a worse level than configured.

Events in (price tick, fill, order ended, day end, holding sync), sell intents out. Every status change goes
through one transition table; a pair missing from the table is illegal and raises.

Once the stop or take-profit has fired the exit is committed: if its market order dies unfilled (limit-down
with no buyers, day end), the next price tick sells again whatever the price, rather than waiting for the
level to be crossed a second time. A gap through several levels resolves to the most protective tier: an
open below the stop sells everything under the stop even if the preserve has not yet sold; an open above
take-profit before the preserve sold sells everything under take-profit and marks the preserve SKIPPED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from autotrade.domain.krx import ceil_to_tick, floor_to_tick, pct
from autotrade.domain.models import Tier, require_aware


@dataclass(frozen=True, slots=True)
class TierPrices:
    stop_loss: int
    preserve: int
    take_profit: int


def tier_prices(
    entry_price: int,
    stop_loss_rate: float = 5.0,
    preserve_rate: float = 4.0,
    take_profit_rate: float = 8.0,
) -> TierPrices:
    """Trigger prices for an entry at ``entry_price``, each a valid KRX tick, rounded up.

    The stop is kept strictly below the entry: for very cheap stocks where rounding up would reach the entry
    price itself, it drops to the tick below the entry.
    """
    if entry_price <= 0:
        raise ValueError(f"entry price must be positive, got {entry_price}")
    if not 0 < stop_loss_rate < 100:
        raise ValueError("stop_loss_rate must be between 0 and 100 percent")
    if preserve_rate <= 0 or take_profit_rate <= 0:
        raise ValueError("preserve_rate and take_profit_rate must be positive")
    if take_profit_rate < preserve_rate:
        raise ValueError("take_profit_rate must not be below preserve_rate")
    p = Decimal(entry_price)
    stop = ceil_to_tick(p * (1 - pct(stop_loss_rate) / 100))
    if stop >= entry_price:
        stop = floor_to_tick(entry_price - 1) if entry_price > 1 else 1
    preserve = ceil_to_tick(p * (1 + pct(preserve_rate) / 100))
    take_profit = ceil_to_tick(p * (1 + pct(take_profit_rate) / 100))
    return TierPrices(stop_loss=stop, preserve=preserve, take_profit=take_profit)


class StrategyStatus(StrEnum):
    """Status of a three-tier strategy (``three_tier_strategies.status``)."""

    ACTIVE = "ACTIVE"
    PRESERVE_PENDING = "PRESERVE_PENDING"
    PRESERVE_TRIGGERED = "PRESERVE_TRIGGERED"  # preserve sold; stop and take-profit watch the rest
    STOP_PENDING = "STOP_PENDING"
    TAKE_PROFIT_PENDING = "TAKE_PROFIT_PENDING"
    STOPPED = "STOPPED"
    COMPLETED = "COMPLETED"
    CLOSED_EXTERNALLY = "CLOSED_EXTERNALLY"


TERMINAL_STATUSES = frozenset(
    {StrategyStatus.STOPPED, StrategyStatus.COMPLETED, StrategyStatus.CLOSED_EXTERNALLY}
)
WATCHED_STATUSES = frozenset(StrategyStatus) - TERMINAL_STATUSES


class TierStatus(StrEnum):
    """Status of one tier (``conditional_orders.status``)."""

    ACTIVE = "ACTIVE"
    TRIGGERED = "TRIGGERED"  # sell order working
    EXECUTED = "EXECUTED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"  # Q = 1 for preserve, or jumped over by a gap


class Trigger(StrEnum):
    STOP_HIT = "STOP_HIT"
    PRESERVE_HIT = "PRESERVE_HIT"
    TAKE_PROFIT_HIT = "TAKE_PROFIT_HIT"
    FILL = "FILL"
    PRESERVE_DONE = "PRESERVE_DONE"
    SOLD_OUT = "SOLD_OUT"
    ORDER_ENDED = "ORDER_ENDED"
    DAY_END = "DAY_END"
    HOLDING_REDUCED = "HOLDING_REDUCED"
    POSITION_GONE = "POSITION_GONE"


S = StrategyStatus
T = Trigger

# The whole life of a strategy: (status, trigger) -> next status.
TRANSITIONS: dict[tuple[StrategyStatus, Trigger], StrategyStatus] = {
    (S.ACTIVE, T.STOP_HIT): S.STOP_PENDING,
    (S.ACTIVE, T.PRESERVE_HIT): S.PRESERVE_PENDING,
    (S.ACTIVE, T.TAKE_PROFIT_HIT): S.TAKE_PROFIT_PENDING,
    (S.PRESERVE_PENDING, T.STOP_HIT): S.STOP_PENDING,
    (S.PRESERVE_PENDING, T.PRESERVE_HIT): S.PRESERVE_PENDING,
    (S.PRESERVE_PENDING, T.TAKE_PROFIT_HIT): S.TAKE_PROFIT_PENDING,
    (S.PRESERVE_PENDING, T.FILL): S.PRESERVE_PENDING,
    (S.PRESERVE_PENDING, T.PRESERVE_DONE): S.PRESERVE_TRIGGERED,
    (S.PRESERVE_PENDING, T.SOLD_OUT): S.COMPLETED,
    (S.PRESERVE_PENDING, T.ORDER_ENDED): S.ACTIVE,
    (S.PRESERVE_TRIGGERED, T.STOP_HIT): S.STOP_PENDING,
    (S.PRESERVE_TRIGGERED, T.TAKE_PROFIT_HIT): S.TAKE_PROFIT_PENDING,
    (S.STOP_PENDING, T.STOP_HIT): S.STOP_PENDING,
    (S.STOP_PENDING, T.FILL): S.STOP_PENDING,
    (S.STOP_PENDING, T.PRESERVE_DONE): S.STOP_PENDING,
    (S.STOP_PENDING, T.SOLD_OUT): S.STOPPED,
    (S.STOP_PENDING, T.ORDER_ENDED): S.STOP_PENDING,
    (S.TAKE_PROFIT_PENDING, T.STOP_HIT): S.STOP_PENDING,
    (S.TAKE_PROFIT_PENDING, T.TAKE_PROFIT_HIT): S.TAKE_PROFIT_PENDING,
    (S.TAKE_PROFIT_PENDING, T.FILL): S.TAKE_PROFIT_PENDING,
    (S.TAKE_PROFIT_PENDING, T.PRESERVE_DONE): S.TAKE_PROFIT_PENDING,
    (S.TAKE_PROFIT_PENDING, T.SOLD_OUT): S.COMPLETED,
    (S.TAKE_PROFIT_PENDING, T.ORDER_ENDED): S.TAKE_PROFIT_PENDING,
}
for _s in WATCHED_STATUSES:
    TRANSITIONS[(_s, T.DAY_END)] = _s
    TRANSITIONS[(_s, T.HOLDING_REDUCED)] = _s
    TRANSITIONS[(_s, T.POSITION_GONE)] = S.CLOSED_EXTERNALLY
del _s


class IllegalTransition(RuntimeError):
    """An event that the strategy's current status does not allow."""


# --- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTick:
    price: int
    at: datetime


@dataclass(frozen=True, slots=True)
class SellFilled:
    tier: Tier
    quantity: int
    price: int
    at: datetime


@dataclass(frozen=True, slots=True)
class SellEnded:
    """A sell order of ``tier`` ended (cancelled, rejected, expired) with ``unfilled`` shares not sold."""

    tier: Tier
    unfilled: int
    at: datetime


@dataclass(frozen=True, slots=True)
class DayEnd:
    at: datetime


@dataclass(frozen=True, slots=True)
class HoldingSynced:
    """Reconciliation: the broker holds ``quantity`` shares of this position's stock."""

    quantity: int
    at: datetime


ExitEvent = PriceTick | SellFilled | SellEnded | DayEnd | HoldingSynced


@dataclass(frozen=True, slots=True)
class SellIntent:
    """Sell ``quantity`` at market for ``tier``. ``attempt`` numbers re-fires of the same tier."""

    tier: Tier
    quantity: int
    trigger_price: int
    observed_price: int
    attempt: int


@dataclass(slots=True)
class ExitStrategy:
    """One position's three-tier exit. Mutated only through :meth:`apply`."""

    code: str
    entry_price: int
    quantity: int
    prices: TierPrices
    held: int = 0
    preserve_target: int = 0
    preserve_sold: int = 0
    status: StrategyStatus = StrategyStatus.ACTIVE
    tiers: dict[Tier, TierStatus] = field(default_factory=dict)
    in_flight: dict[Tier, int] = field(default_factory=dict)
    attempts: dict[Tier, int] = field(default_factory=dict)
    history: list[tuple[ExitEvent, StrategyStatus]] = field(default_factory=list)

    @classmethod
    def arm(
        cls,
        code: str,
        entry_price: int,
        quantity: int,
        stop_loss_rate: float = 5.0,
        preserve_rate: float = 4.0,
        take_profit_rate: float = 8.0,
    ) -> ExitStrategy:
        """Arm a new strategy on ``quantity`` shares held at average ``entry_price``."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        prices = tier_prices(entry_price, stop_loss_rate, preserve_rate, take_profit_rate)
        preserve_target = quantity // 2
        return cls(
            code=code,
            entry_price=entry_price,
            quantity=quantity,
            prices=prices,
            held=quantity,
            preserve_target=preserve_target,
            tiers={
                Tier.STOP_LOSS: TierStatus.ACTIVE,
                # Q = 1 cannot be halved: the preserve tier is skipped and stop/take-profit cover the share.
                Tier.PRESERVE: TierStatus.ACTIVE if preserve_target > 0 else TierStatus.SKIPPED,
                Tier.TAKE_PROFIT: TierStatus.ACTIVE,
            },
            in_flight={t: 0 for t in Tier},
            attempts={t: 0 for t in Tier},
        )

    # --- queries ---

    @property
    def free(self) -> int:
        """Shares held and not already being sold."""
        return self.held - sum(self.in_flight.values())

    @property
    def is_closed(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def committed(self) -> bool:
        return self.status in (StrategyStatus.STOP_PENDING, StrategyStatus.TAKE_PROFIT_PENDING)

    def stop_quantity(self) -> int:
        """Shares the stop currently covers (everything still held)."""
        return 0 if self.is_closed else self.held

    # --- transitions ---

    def apply(self, event: ExitEvent) -> list[SellIntent]:
        """Apply one event; return the sell intents it produces."""
        require_aware(event.at)
        if isinstance(event, PriceTick):
            return self._on_tick(event)
        if isinstance(event, SellFilled):
            self._on_fill(event)
        elif isinstance(event, SellEnded):
            self._on_ended(event)
        elif isinstance(event, DayEnd):
            self._on_day_end(event)
        else:
            self._on_sync(event)
        return []

    def _move(self, trigger: Trigger, event: ExitEvent) -> None:
        nxt = TRANSITIONS.get((self.status, trigger))
        if nxt is None:
            raise IllegalTransition(f"{self.code}: {trigger} is not allowed in status {self.status}")
        self.status = nxt
        self.history.append((event, nxt))
        if nxt in TERMINAL_STATUSES:
            for tier, st in self.tiers.items():
                if st in (TierStatus.ACTIVE, TierStatus.TRIGGERED):
                    self.tiers[tier] = TierStatus.CANCELLED

    def _on_tick(self, tick: PriceTick) -> list[SellIntent]:
        if self.is_closed:
            raise IllegalTransition(f"{self.code}: price tick on a closed strategy ({self.status})")
        free = self.free
        if free <= 0 or tick.price <= 0:
            return []
        tier = self._triggered_tier(tick.price)
        if tier is None:
            return []
        if tier is Tier.STOP_LOSS:
            trigger, qty = Trigger.STOP_HIT, free
            for other in (Tier.PRESERVE, Tier.TAKE_PROFIT):
                if self.tiers[other] is TierStatus.ACTIVE:
                    self.tiers[other] = TierStatus.CANCELLED
        elif tier is Tier.TAKE_PROFIT:
            trigger, qty = Trigger.TAKE_PROFIT_HIT, free
            if self.tiers[Tier.PRESERVE] is TierStatus.ACTIVE:
                self.tiers[Tier.PRESERVE] = TierStatus.SKIPPED
        else:
            left = self.preserve_target - self.preserve_sold - self.in_flight[Tier.PRESERVE]
            trigger, qty = Trigger.PRESERVE_HIT, min(left, free)
        self._move(trigger, tick)
        self.tiers[tier] = TierStatus.TRIGGERED
        self.in_flight[tier] += qty
        self.attempts[tier] += 1
        trigger_price = {
            Tier.STOP_LOSS: self.prices.stop_loss,
            Tier.PRESERVE: self.prices.preserve,
            Tier.TAKE_PROFIT: self.prices.take_profit,
        }[tier]
        return [SellIntent(tier, qty, trigger_price, tick.price, self.attempts[tier])]

    def _triggered_tier(self, price: int) -> Tier | None:
        # A committed exit re-sells whatever is free at any price.
        if self.status is StrategyStatus.STOP_PENDING:
            return Tier.STOP_LOSS
        if price <= self.prices.stop_loss:
            return Tier.STOP_LOSS
        if self.status is StrategyStatus.TAKE_PROFIT_PENDING:
            return Tier.TAKE_PROFIT
        if price >= self.prices.take_profit and self.tiers[Tier.TAKE_PROFIT] is TierStatus.ACTIVE:
            return Tier.TAKE_PROFIT
        preserve_left = self.preserve_target - self.preserve_sold
        if (
            price >= self.prices.preserve
            and preserve_left > 0
            and self.tiers[Tier.PRESERVE] in (TierStatus.ACTIVE, TierStatus.TRIGGERED)
            and self.in_flight[Tier.PRESERVE] < preserve_left
        ):
            return Tier.PRESERVE
        return None

    def _on_fill(self, fill: SellFilled) -> None:
        if fill.quantity <= 0:
            raise ValueError("fill quantity must be positive")
        if fill.quantity > self.in_flight[fill.tier]:
            raise IllegalTransition(
                f"{self.code}: fill of {fill.quantity} exceeds the {self.in_flight[fill.tier]} shares "
                f"being sold for {fill.tier}"
            )
        self.in_flight[fill.tier] -= fill.quantity
        self.held -= fill.quantity
        if fill.tier is Tier.PRESERVE:
            self.preserve_sold += fill.quantity
        if self.held == 0:
            self.tiers[fill.tier] = TierStatus.EXECUTED
            self._move(Trigger.SOLD_OUT, fill)
        elif fill.tier is Tier.PRESERVE and self.preserve_sold == self.preserve_target:
            self.tiers[Tier.PRESERVE] = TierStatus.EXECUTED
            self._move(Trigger.PRESERVE_DONE, fill)
        else:
            self._move(Trigger.FILL, fill)

    def _on_ended(self, ended: SellEnded) -> None:
        if ended.unfilled <= 0:
            raise ValueError("an ended order reports a positive unfilled quantity")
        if ended.unfilled > self.in_flight[ended.tier]:
            raise IllegalTransition(
                f"{self.code}: {ended.unfilled} unfilled exceeds the {self.in_flight[ended.tier]} shares "
                f"being sold for {ended.tier}"
            )
        self.in_flight[ended.tier] -= ended.unfilled
        if ended.tier is Tier.PRESERVE and self.tiers[Tier.PRESERVE] is TierStatus.TRIGGERED:
            self.tiers[Tier.PRESERVE] = TierStatus.ACTIVE
        self._move(Trigger.ORDER_ENDED, ended)

    def _on_day_end(self, event: DayEnd) -> None:
        # Orders are day orders: whatever is still working dies at the close.
        for tier, qty in list(self.in_flight.items()):
            if qty > 0:
                self._on_ended(SellEnded(tier, qty, event.at))
        self._move(Trigger.DAY_END, event)

    def _on_sync(self, sync: HoldingSynced) -> None:
        if sync.quantity < 0:
            raise ValueError("held quantity cannot be negative")
        if sync.quantity >= self.held:
            # More shares than we bought (bought by hand) are not ours to manage; nothing changes.
            return
        self.held = sync.quantity
        # Shares already gone cannot still be in flight; trim the largest first.
        excess = sum(self.in_flight.values()) - self.held
        for tier in (Tier.PRESERVE, Tier.TAKE_PROFIT, Tier.STOP_LOSS):
            cut = min(excess, self.in_flight[tier])
            self.in_flight[tier] -= cut
            excess -= cut
        self._move(Trigger.POSITION_GONE if self.held == 0 else Trigger.HOLDING_REDUCED, sync)
