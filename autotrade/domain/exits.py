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

Resting stop (optional, ``resting_stop`` setting): a stop-limit sell rests at the broker at the stop tier for
the shares the watch does not already have on their way out, so the stop still fires when our watcher is
down. Its own small life, through :data:`RESTING_TRANSITIONS`:

1. NONE -> PLACING when the exit decides to rest a stop for :meth:`ExitStrategy.resting_target` shares
   (:meth:`ExitStrategy.rest_stop`); PLACING -> RESTING once the broker accepted it (``RestingPlaced``), back
   to NONE when it was refused (``RestingNotPlaced``).
2. Before any market sell the resting stop must shrink to the new target (everything still free: the
   preserve leaves the rest covered; a take-profit or a market stop leaves nothing): RESTING -> REDUCING
   (:meth:`ExitStrategy.reduce_resting` says by how much), then REDUCING -> RESTING with what the broker
   confirms still rests (``RestingReduced``), or NONE when nothing does. Only then does the sell go.
3. A fill of the resting stop (``RestingFilled``) sells shares like a stop: the position closes as STOPPED
   when nothing is left; a part left unsold (a gap below the limit) commits the stop (STOP_PENDING), so the
   watch sells the rest at market. Shares it sold can no longer be sold by a market sell decided meanwhile:
   those are trimmed (no share is sold twice).
4. Cancelled or expired with the day (orders are day orders): ``RestingEnded`` -> NONE; the next session
   places it again.
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


class RestingStatus(StrEnum):
    """The stop-limit order resting at the broker for a strategy (resting-stop mode only)."""

    NONE = "NONE"  # nothing rests
    PLACING = "PLACING"  # decided, not yet confirmed by the broker
    RESTING = "RESTING"  # the broker holds it for ``ExitStrategy.resting`` shares
    REDUCING = "REDUCING"  # a (partial) cancel was asked for and is not yet confirmed


class RestingTrigger(StrEnum):
    PLACE = "PLACE"
    PLACED = "PLACED"
    NOT_PLACED = "NOT_PLACED"
    REDUCE = "REDUCE"
    REDUCED = "REDUCED"
    REDUCED_TO_NONE = "REDUCED_TO_NONE"
    FILL = "FILL"
    FILLED_OUT = "FILLED_OUT"
    ENDED = "ENDED"


R = RestingStatus
RT = RestingTrigger

# The resting stop's life: (status, trigger) -> next status. A pair missing is illegal and raises.
RESTING_TRANSITIONS: dict[tuple[RestingStatus, RestingTrigger], RestingStatus] = {
    (R.NONE, RT.PLACE): R.PLACING,
    (R.PLACING, RT.PLACED): R.RESTING,
    (R.PLACING, RT.NOT_PLACED): R.NONE,
    (R.RESTING, RT.REDUCE): R.REDUCING,
    (R.REDUCING, RT.REDUCE): R.REDUCING,  # asked again (the first answer was lost)
    (R.REDUCING, RT.REDUCED): R.RESTING,
    (R.REDUCING, RT.REDUCED_TO_NONE): R.NONE,
    (R.PLACING, RT.FILL): R.PLACING,  # it filled before the broker's acceptance reached us
    (R.RESTING, RT.FILL): R.RESTING,
    (R.REDUCING, RT.FILL): R.REDUCING,
    (R.RESTING, RT.FILLED_OUT): R.NONE,
    (R.REDUCING, RT.FILLED_OUT): R.NONE,
    (R.PLACING, RT.ENDED): R.NONE,
    (R.RESTING, RT.ENDED): R.NONE,
    (R.REDUCING, RT.ENDED): R.NONE,
    (R.NONE, RT.ENDED): R.NONE,  # the day ended with nothing resting
}
# What the resting stop is ordered to be: the broker may still hold shares for it.
AT_BROKER = frozenset({R.RESTING, R.REDUCING})


def stop_limit_price(trigger: int, ticks_below: int) -> int:
    """The limit of a resting stop: ``ticks_below`` valid KRX prices under the trigger (stepping down across a
    band edge takes the lower band's smaller tick). A limit under the trigger still fills when the price
    gaps a little through the stop; 0 ticks puts the limit at the trigger."""
    if trigger <= 0 or ticks_below < 0:
        raise ValueError("trigger must be positive and ticks_below non-negative")
    price = trigger
    for _ in range(ticks_below):
        if price <= 1:
            break
        price = floor_to_tick(price - 1)
    return price


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
    RESTING_STOP_FILL = "RESTING_STOP_FILL"  # the broker's stop sold part: the rest is sold at market
    RESTING_STOP_SOLD_OUT = "RESTING_STOP_SOLD_OUT"


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
    TRANSITIONS[(_s, T.RESTING_STOP_FILL)] = S.STOP_PENDING
    TRANSITIONS[(_s, T.RESTING_STOP_SOLD_OUT)] = S.STOPPED
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


@dataclass(frozen=True, slots=True)
class RestingPlaced:
    """The broker accepted the resting stop for ``quantity`` shares."""

    quantity: int
    at: datetime


@dataclass(frozen=True, slots=True)
class RestingNotPlaced:
    """The broker refused the resting stop (nothing rests)."""

    at: datetime


@dataclass(frozen=True, slots=True)
class RestingReduced:
    """The broker confirms ``quantity`` shares still rest after a (partial) cancel."""

    quantity: int
    at: datetime


@dataclass(frozen=True, slots=True)
class RestingFilled:
    """The resting stop sold ``quantity`` shares at ``price``."""

    quantity: int
    price: int
    at: datetime


@dataclass(frozen=True, slots=True)
class RestingEnded:
    """The resting stop is no longer working (cancelled in full, expired with the day)."""

    at: datetime


RestingEvent = RestingPlaced | RestingNotPlaced | RestingReduced | RestingFilled | RestingEnded
RESTING_EVENTS = (RestingPlaced, RestingNotPlaced, RestingReduced, RestingFilled, RestingEnded)
ExitEvent = PriceTick | SellFilled | SellEnded | DayEnd | HoldingSynced | RestingEvent


@dataclass(frozen=True, slots=True)
class RestingStop:
    """Rest a stop-limit sell of ``quantity`` shares: trigger ``trigger`` (the stop tier), limit ``limit``."""

    quantity: int
    trigger: int
    limit: int


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
    resting: int = 0  # shares the broker's resting stop holds (confirmed)
    resting_status: RestingStatus = RestingStatus.NONE

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

    def resting_target(self) -> int:
        """Shares a resting stop should hold now: every share not already on its way out; none once the exit
        is committed to a market sell (stop or take-profit fired) or closed."""
        if self.is_closed or self.committed:
            return 0
        return max(self.free, 0)

    # --- the resting stop: decisions ---

    def rest_stop(self, ticks_below: int, at: datetime) -> RestingStop | None:
        """Decide to rest a stop at the broker when none rests and shares need covering (NONE -> PLACING)."""
        require_aware(at)
        qty = self.resting_target()
        if self.resting_status is not RestingStatus.NONE or qty <= 0:
            return None
        self._rest(RestingTrigger.PLACE)
        return RestingStop(qty, self.prices.stop_loss, stop_limit_price(self.prices.stop_loss, ticks_below))

    def reduce_resting(self, at: datetime) -> int | None:
        """Before a market sell: how many resting shares to cancel (0 means all of them), or None when what
        rests is already within the target. RESTING -> REDUCING."""
        require_aware(at)
        if self.resting_status not in AT_BROKER:
            return None
        target = self.resting_target()
        if self.resting <= target:
            return None
        self._rest(RestingTrigger.REDUCE)
        return 0 if target == 0 else self.resting - target

    def _rest(self, trigger: RestingTrigger) -> None:
        nxt = RESTING_TRANSITIONS.get((self.resting_status, trigger))
        if nxt is None:
            raise IllegalTransition(
                f"{self.code}: resting stop {trigger} is not allowed in status {self.resting_status}"
            )
        self.resting_status = nxt
        if nxt is RestingStatus.NONE:
            self.resting = 0

    # --- transitions ---

    def apply(self, event: ExitEvent) -> list[SellIntent]:
        """Apply one event; return the sell intents it produces."""
        require_aware(event.at)
        if isinstance(event, PriceTick):
            return self._on_tick(event)
        if isinstance(event, RESTING_EVENTS):
            self._on_resting(event)
        elif isinstance(event, SellFilled):
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
        # Orders are day orders: whatever is still working dies at the close, the resting stop included.
        for tier, qty in list(self.in_flight.items()):
            if qty > 0:
                self._on_ended(SellEnded(tier, qty, event.at))
        self._rest(RestingTrigger.ENDED)
        self._move(Trigger.DAY_END, event)

    def _on_resting(self, event: RestingEvent) -> None:
        if isinstance(event, RestingPlaced):
            if event.quantity <= 0:
                raise ValueError("a resting stop holds a positive quantity")
            self._rest(RestingTrigger.PLACED)
            self.resting = event.quantity
        elif isinstance(event, RestingNotPlaced):
            self._rest(RestingTrigger.NOT_PLACED)
        elif isinstance(event, RestingReduced):
            if not 0 <= event.quantity <= self.resting:
                raise IllegalTransition(f"{self.code}: {self.resting} resting cannot become {event.quantity}")
            self._rest(RestingTrigger.REDUCED if event.quantity else RestingTrigger.REDUCED_TO_NONE)
            self.resting = event.quantity
        elif isinstance(event, RestingEnded):
            self._rest(RestingTrigger.ENDED)
        else:
            self._on_resting_fill(event)

    def _on_resting_fill(self, fill: RestingFilled) -> None:
        if fill.quantity <= 0:
            raise ValueError("fill quantity must be positive")
        if self.is_closed:
            raise IllegalTransition(f"{self.code}: resting stop fill on a closed strategy ({self.status})")
        placing = self.resting_status is RestingStatus.PLACING  # its quantity is not confirmed yet
        if fill.quantity > self.held or (not placing and fill.quantity > self.resting):
            raise IllegalTransition(
                f"{self.code}: resting stop fill of {fill.quantity} exceeds the {self.resting} shares resting"
            )
        self.resting = max(self.resting - fill.quantity, 0)
        self.held -= fill.quantity
        self._rest(RestingTrigger.FILL if self.resting or placing else RestingTrigger.FILLED_OUT)
        # Shares the broker's stop sold cannot also be sold by a market sell decided meanwhile.
        excess = sum(self.in_flight.values()) - self.held
        for tier in (Tier.TAKE_PROFIT, Tier.PRESERVE, Tier.STOP_LOSS):
            cut = min(max(excess, 0), self.in_flight[tier])
            self.in_flight[tier] -= cut
            excess -= cut
        for other in (Tier.PRESERVE, Tier.TAKE_PROFIT):
            if self.tiers[other] is TierStatus.ACTIVE:
                self.tiers[other] = TierStatus.CANCELLED
        if self.held == 0:
            self.tiers[Tier.STOP_LOSS] = TierStatus.EXECUTED
            self._move(Trigger.RESTING_STOP_SOLD_OUT, fill)
        else:
            self.tiers[Tier.STOP_LOSS] = TierStatus.TRIGGERED
            self._move(Trigger.RESTING_STOP_FILL, fill)

    def _on_sync(self, sync: HoldingSynced) -> None:
        if sync.quantity < 0:
            raise ValueError("held quantity cannot be negative")
        if sync.quantity >= self.held:
            # More shares than we bought (bought by hand) are not ours to manage; nothing changes.
            return
        self.held = sync.quantity
        self.resting = min(self.resting, self.held)
        # Shares already gone cannot still be in flight; trim the largest first.
        excess = sum(self.in_flight.values()) - self.held
        for tier in (Tier.PRESERVE, Tier.TAKE_PROFIT, Tier.STOP_LOSS):
            cut = min(max(excess, 0), self.in_flight[tier])  # fewer in flight than held: nothing to trim
            self.in_flight[tier] -= cut
            excess -= cut
        self._move(Trigger.POSITION_GONE if self.held == 0 else Trigger.HOLDING_REDUCED, sync)
