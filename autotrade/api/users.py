"""Users and roles for ``autotrade admin``: create an operator, grant and revoke the role, list users.

A role change reaches every API process within the session check's cache time (5 s,
:data:`autotrade.api.auth.USER_CACHE_SECONDS`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from autotrade.api.auth import hash_password
from autotrade.store.db import Database
from autotrade.store.models import User, UserApiKey

ROLES = ("user", "operator")
MIN_PASSWORD = 10


class UserError(Exception):
    """A message safe to print."""


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    email: str | None
    role: str
    keys: str  # "account:STATUS, ..."


def create_operator(db: Database, email: str, password: str) -> str:
    """A new user with the operator role; its user id."""
    email = email.strip().lower()
    if "@" not in email or len(password) < MIN_PASSWORD:
        raise UserError(f"an email and a password of at least {MIN_PASSWORD} characters are needed")
    with db.unit_of_work() as s:
        if s.scalar(sa.select(User.user_id).where(User.email == email)) is not None:
            raise UserError(f"{email} exists: use grant-operator")
        user = User(user_id=uuid.uuid4().hex, email=email, password_hash=hash_password(password),
                    role="operator")  # fmt: skip
        s.add(user)
        return user.user_id


def set_role(db: Database, email: str, role: str) -> str:
    """Give the user ``role``; the role it had."""
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    with db.unit_of_work() as s:
        user = s.scalar(sa.select(User).where(User.email == email.strip().lower()))
        if user is None:
            raise UserError(f"no user {email}")
        before, user.role = user.role, role
        return before


def list_users(db: Database) -> list[UserRow]:
    with db.unit_of_work() as s:
        users = s.scalars(sa.select(User).order_by(User.email)).all()
        keys = s.execute(sa.select(UserApiKey.user_id, UserApiKey.account_no, UserApiKey.api_status)).all()
        by_user: dict[str, list[str]] = {}
        for user_id, account, st in keys:
            by_user.setdefault(user_id, []).append(f"{account}:{st.value}")
        return [UserRow(u.user_id, u.email, u.role, ", ".join(sorted(by_user.get(u.user_id, []))))
                for u in users]  # fmt: skip
