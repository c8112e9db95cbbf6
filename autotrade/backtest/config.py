"""Backtest settings: the user's risk limits, exit rates and costs, plus the backtester's own options.

Defaults are the specification's values, written out here rather than read from the environment, so the
same input files and the same config file give the same result on every machine.
"""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from autotrade.config import TradingRules
from autotrade.domain.risk import RiskLimits


class BacktestConfig(TradingRules):
    """The live trading rules (:class:`~autotrade.config.TradingRules`) plus the backtester's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_capital: int = Field(10_000_000, gt=0, description="cash at the start, KRW")
    daily_limit: int = Field(10_000_000, gt=0, description="the user's own daily limit")

    max_holding_days: int | None = Field(
        None,
        gt=0,
        description="close a position still open this many trading days after the buy, at the close",
    )
    buy_at_upper_limit_close: bool = Field(
        False, description="assume a buy fills after a close at the upper price limit (default: it does not)"
    )
    use_krx_calendar: bool = Field(
        True, description="timeline of XKRX trading days when every bar date lies within the calendar"
    )

    @field_validator("fee_rate", "sell_tax_rate", mode="before")
    @classmethod
    def _exact_rate(cls, v: Any) -> Any:
        # A TOML/JSON float such as 0.015 must become Decimal("0.015"), not its binary expansion.
        return Decimal(str(v)) if isinstance(v, float) else v

    @model_validator(mode="after")
    def _tiers_ordered(self) -> BacktestConfig:
        if self.take_profit_rate < self.preserve_rate:
            raise ValueError("take_profit_rate must not be below preserve_rate")
        return self

    def limits(self) -> RiskLimits:
        return self.risk_limits(self.daily_limit)

    def as_record(self) -> dict[str, Any]:
        """Plain JSON-ready values (rates as strings, so they read back exactly)."""
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.model_dump().items()}


def load_config(path: Path | None) -> BacktestConfig:
    """Read a TOML or JSON file of :class:`BacktestConfig` fields; None gives the defaults."""
    if path is None:
        return BacktestConfig()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
        # A [backtest] table is accepted as well as top-level keys.
        data = raw.get("backtest", raw)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"config file must be .toml or .json, got {path.name}")
    if not isinstance(data, dict):
        raise ValueError("config file must hold a table of settings")
    return BacktestConfig.model_validate(data)
