"""Backtester on the live domain code.

The day loop (:mod:`autotrade.backtest.engine`) sizes buys with :func:`autotrade.domain.risk.plan_buys` and
exits every position through the live :class:`autotrade.domain.exits.ExitStrategy`; the fill conventions are
documented in :mod:`autotrade.backtest.fills`. Modules:

- :mod:`~autotrade.backtest.config` settings (TOML/JSON), :mod:`~autotrade.backtest.data` inputs (CSV or
  Parquet, indexed), :mod:`~autotrade.backtest.synthetic` a seeded synthetic market;
- :mod:`~autotrade.backtest.engine` the indexed engine (``run_backtest``),
  :mod:`~autotrade.backtest.reference` the plain reference loop (``run_reference``);
- :mod:`~autotrade.backtest.metrics` and :mod:`~autotrade.backtest.report` the outputs;
  :mod:`~autotrade.backtest.cli` the ``autotrade backtest`` command.

Nothing is imported here, so ``autotrade.backtest.cli`` loads without pandas, numpy or matplotlib until the
command runs.
"""
