"""Alembic migrations on SQLite and PostgreSQL: up, down, and the schema matches the models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from autotrade.store.migrate import downgrade, upgrade
from autotrade.store.models import Base

SPEC_COLUMNS = {
    "user_api_keys": {
        "id", "user_id", "app_key_encrypted", "app_secret_encrypted", "account_no", "account_name",
        "api_status", "registered_at", "last_used_at", "daily_limit", "is_auto_trading_enabled",
        "created_at", "updated_at",
    },
    "trading_signals": {
        "id", "user_id", "code", "name", "score", "current_price", "target_quantity", "confidence",
        "reasons", "created_at", "status",
    },
    "three_tier_strategies": {
        "id", "code", "name", "quantity", "entry_price", "entry_date", "stop_loss_price", "preserve_price",
        "take_profit_price", "status", "created_at",
    },
    "conditional_orders": {
        "id", "strategy_id", "order_no", "order_type", "trigger_price", "quantity", "status", "created_at",
        "executed_at",
    },
    "trade_records": {
        "id", "trade_id", "user_id", "code", "name", "action", "quantity", "price", "amount", "executed_at",
        "signal_score", "exit_reason", "profit_loss", "strategy_id",
    },
}  # fmt: skip

MONEY_COLUMNS = {
    "user_api_keys": ["daily_limit"],
    "trading_signals": ["current_price"],
    "three_tier_strategies": ["entry_price", "stop_loss_price", "preserve_price", "take_profit_price"],
    "conditional_orders": ["trigger_price"],
    "trade_records": ["price", "amount", "fee", "tax", "profit_loss"],
    "order_intents": ["price", "filled_amount"],
    "fills": ["price", "fee", "tax"],
    "access_log": ["amount"],
    "equity_snapshots": ["cash", "holdings_value", "equity", "realized_pnl", "unrealized_pnl"],
    "daily_bars": ["open", "high", "low", "close"],
}
"""Every KRW column: a 64-bit integer (a 32-bit INTEGER overflows at 2,147,483,647 won, about 2.1 billion,
which one account's equity or a day's traded amount can pass)."""


def test_upgrade_downgrade_and_spec_tables(db_url: str) -> None:
    upgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        insp = sa.inspect(engine)
        tables = set(insp.get_table_names())
        for table, cols in SPEC_COLUMNS.items():
            assert table in tables
            have = {c["name"] for c in insp.get_columns(table)}
            assert cols <= have, f"{table} lacks {cols - have}"
            assert {"user_id", "account_no"} <= have, f"{table}: user and account on every trading row"
        for table, money_columns in MONEY_COLUMNS.items():
            types = {c["name"]: c["type"] for c in insp.get_columns(table)}
            for money in money_columns:
                assert isinstance(types[money], sa.BigInteger), (table, money, types[money])
        assert {"users", "accounts", "order_intents", "fills", "access_log", "security_events",
                "scan_batches"} <= tables  # fmt: skip
        # The migration and the models agree exactly.
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        if engine.dialect.name == "postgresql":  # room for the order path's updates in each page (0014)
            with engine.connect() as conn:
                options = dict(conn.execute(sa.text(
                    "SELECT relname, array_to_string(reloptions, ',') FROM pg_class "
                    "WHERE relname IN ('order_intents', 'access_log') AND relkind = 'r' "
                    "AND relnamespace = current_schema()::regnamespace"
                )).all())  # fmt: skip
            assert options == {"order_intents": "fillfactor=70", "access_log": "fillfactor=80"}
    finally:
        engine.dispose()
    downgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        left = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
        assert left == set()
    finally:
        engine.dispose()
