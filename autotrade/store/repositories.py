"""Repositories: small query helpers that take the unit of work's session. No commits here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autotrade.domain.exits import WATCHED_STATUSES
from autotrade.domain.models import ApiStatus
from autotrade.domain.orders import NEEDS_RECONCILIATION, OPEN_STATUSES
from autotrade.store.models import (
    Account,
    OrderIntentRow,
    ThreeTierStrategy,
    User,
    UserApiKey,
)


class Users:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, user_id: str) -> User | None:
        return self.s.get(User, user_id)

    def ensure(self, user_id: str, **fields: object) -> User:
        user = self.s.get(User, user_id)
        if user is None:
            user = User(user_id=user_id, **fields)
            self.s.add(user)
            self.s.flush()
        return user

    def ensure_account(self, user_id: str, account_no: str, account_name: str | None = None) -> Account:
        acct = self.s.get(Account, account_no)
        if acct is None:
            acct = Account(account_no=account_no, user_id=user_id, account_name=account_name)
            self.s.add(acct)
            self.s.flush()
        elif acct.user_id != user_id:
            raise PermissionError("account belongs to another user")
        return acct


class ApiKeys:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, user_id: str, account_no: str) -> UserApiKey | None:
        return self.s.scalar(
            sa.select(UserApiKey).where(UserApiKey.user_id == user_id, UserApiKey.account_no == account_no)
        )

    def for_user(self, user_id: str) -> Sequence[UserApiKey]:
        return self.s.scalars(
            sa.select(UserApiKey).where(UserApiKey.user_id == user_id).order_by(UserApiKey.id)
        ).all()

    def tradable(self, user_ids: Sequence[str] | None = None) -> Sequence[UserApiKey]:
        """Active keys with auto-trading enabled, optionally limited to ``user_ids``."""
        q = sa.select(UserApiKey).where(
            UserApiKey.api_status == ApiStatus.ACTIVE, UserApiKey.is_auto_trading_enabled.is_(True)
        )
        if user_ids is not None:
            q = q.where(UserApiKey.user_id.in_(list(user_ids)))
        return self.s.scalars(q.order_by(UserApiKey.user_id, UserApiKey.account_no)).all()


class Intents:
    def __init__(self, session: Session) -> None:
        self.s = session

    def by_key(self, key: str) -> OrderIntentRow | None:
        return self.s.scalar(sa.select(OrderIntentRow).where(OrderIntentRow.key == key))

    def create_once(self, row: OrderIntentRow) -> tuple[OrderIntentRow, bool]:
        """Insert ``row`` unless an intent with its key exists; returns (the row, created?).

        The unique key makes this safe under concurrent writers: the loser of a race gets the winner's row.
        """
        existing = self.by_key(row.key)
        if existing is not None:
            return existing, False
        try:
            with self.s.begin_nested():
                self.s.add(row)
                self.s.flush()
        except IntegrityError:
            existing = self.by_key(row.key)
            if existing is None:
                raise
            return existing, False
        return row, True

    def open_for(self, user_id: str, account_no: str) -> Sequence[OrderIntentRow]:
        return self.s.scalars(
            sa.select(OrderIntentRow).where(
                OrderIntentRow.user_id == user_id,
                OrderIntentRow.account_no == account_no,
                OrderIntentRow.status.in_(list(OPEN_STATUSES)),
            )
        ).all()

    def needing_reconciliation(self, day: date | None = None) -> Sequence[OrderIntentRow]:
        q = sa.select(OrderIntentRow).where(OrderIntentRow.status.in_(list(NEEDS_RECONCILIATION)))
        if day is not None:
            q = q.where(OrderIntentRow.trading_day == day)
        return self.s.scalars(q).all()

    def for_day(self, day: date, user_id: str | None = None) -> Sequence[OrderIntentRow]:
        q = sa.select(OrderIntentRow).where(OrderIntentRow.trading_day == day)
        if user_id is not None:
            q = q.where(OrderIntentRow.user_id == user_id)
        return self.s.scalars(q.order_by(OrderIntentRow.id)).all()


class Strategies:
    def __init__(self, session: Session) -> None:
        self.s = session

    def watched(self, user_id: str | None = None) -> Sequence[ThreeTierStrategy]:
        q = sa.select(ThreeTierStrategy).where(ThreeTierStrategy.status.in_(list(WATCHED_STATUSES)))
        if user_id is not None:
            q = q.where(ThreeTierStrategy.user_id == user_id)
        return self.s.scalars(q.order_by(ThreeTierStrategy.id)).all()

    def for_user(self, user_id: str) -> Sequence[ThreeTierStrategy]:
        return self.s.scalars(
            sa.select(ThreeTierStrategy)
            .where(ThreeTierStrategy.user_id == user_id)
            .order_by(ThreeTierStrategy.id)
        ).all()
