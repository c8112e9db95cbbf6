"""Prefect flows: evening_signal_and_buy, morning_fill_and_arm, intraday_reconcile, daily_report."""
