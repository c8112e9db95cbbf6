"""Registering a user's Kiwoom app key: checked with the broker before anything is stored.

The account number is bound to the key: the broker is asked which accounts the key serves (ka00001
계좌번호조회) and any other number is refused, so nobody can file a key under somebody else's account (or a
made-up one). The account's name is read from the broker (kt00004 ``acnt_nm``), never taken from the user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.broker.errors import AuthError, BrokerError, CredentialsError
from autotrade.broker.messages import account_digits
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import FixedToken
from autotrade.domain.models import ApiStatus
from autotrade.store.db import Database
from autotrade.store.models import SecurityEvent, UserApiKey
from autotrade.vault.gateway import BrokerGateway, key_id
from autotrade.vault.kms import KmsError

log = logging.getLogger(__name__)


class RegistrationRefused(Exception):
    """The key could not be validated or stored (message safe to show the user)."""


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account_no: str
    account_name: str | None
    balance: int


async def register_user_api(
    gateway: BrokerGateway,
    user_id: str,
    app_key: SecretStr,
    app_secret: SecretStr,
    account_no: str,
    daily_limit: int,
    account_name: str | None = None,
) -> AccountInfo:
    """Validate the key with the broker (token, the accounts it serves, then the account's balance and
    holdings), then seal and store it. On any failure nothing is stored. ``account_name`` is only a
    fallback for a broker that names no account."""
    if daily_limit <= 0:
        raise RegistrationRefused("daily_limit must be positive")
    try:
        issued = await gateway.client.issue_token(app_key, app_secret)
        just_issued = FixedToken(issued.token.get_secret_value())
        probe = KiwoomSession(gateway.client, key_id(user_id, account_no), just_issued)
        served = await probe.account_numbers()
        if account_digits(account_no) not in served:
            log.warning("key for %s refused: the broker does not list that account for it",
                        key_id(user_id, account_no))  # fmt: skip
            raise RegistrationRefused("this app key does not serve that account number (ask the broker "
                                      "which account the key was issued for)")  # fmt: skip
        account_name = await probe.account_name() or account_name
        deposit = await probe.deposit()
        await probe.holdings()
    except AuthError:
        raise RegistrationRefused("the broker refused this app key and secret") from None
    except BrokerError as exc:
        raise RegistrationRefused(f"the broker could not be reached to check the key ({exc.code})") from None
    try:
        gateway.keys.store(
            user_id, account_no, app_key, app_secret, account_name=account_name, daily_limit=daily_limit
        )
    except KmsError:
        raise RegistrationRefused("the key could not be encrypted; nothing was stored") from None
    except PermissionError:
        raise RegistrationRefused("this account is registered to another user") from None
    gateway.provider(user_id, account_no).adopt(issued)
    log.info("key registered for %s", key_id(user_id, account_no))
    return AccountInfo(account_no=account_no, account_name=account_name, balance=deposit.cash)


# -------------------------------------------------------------------------------------------------------
# A key's status follows the broker

WHAT_TO_DO = {
    ApiStatus.EXPIRED: "the broker no longer accepts this app key (revoked or lapsed at Kiwoom): issue a new "
    "key at Kiwoom and rotate it here; auto-trading is off until then",
    ApiStatus.INACTIVE: "the broker no longer lists this account for the app key: register the key issued "
    "for this account (or check the account at Kiwoom); auto-trading is off until then",
}


def mark_key_refused(db: Database, user_id: str, account_no: str, status: ApiStatus, now: datetime) -> bool:
    """The broker refused the key even with a fresh token: its status becomes ``status`` (EXPIRED or
    INACTIVE), auto-trading stops for it, a security event tells the operator and the user what to do
    (``GET /api/user/api-status`` shows it). Only an ACTIVE key moves (a DISABLED or DELETED key keeps its
    status). True when the key moved."""
    with db.unit_of_work() as s:
        moved = s.execute(
            sa.update(UserApiKey)
            .where(UserApiKey.user_id == user_id, UserApiKey.account_no == account_no,
                   UserApiKey.api_status == ApiStatus.ACTIVE)
            .values(api_status=status, status_changed_at=now, is_auto_trading_enabled=False)
        ).rowcount  # type: ignore[attr-defined]  # fmt: skip
        if moved:
            s.add(SecurityEvent(at=now, user_id=user_id, account_no=account_no, rule="broker_refused_key",
                                severity="high", detail=WHAT_TO_DO[status],
                                action_taken=f"key {status.value}; auto-trading off"))  # fmt: skip
    if moved:
        log.warning("%s: the broker refused the key; now %s", key_id(user_id, account_no), status.value)
    return bool(moved)


async def check_key(gateway: BrokerGateway, user_id: str, account_no: str) -> ApiStatus | None:
    """Ask the broker afresh whether a stored key still serves its account: no token for it -> EXPIRED; a
    token, but the account is not among those ka00001 lists -> INACTIVE; both fine -> None (nothing to
    change). A broker that cannot be reached raises (nothing is decided on a network error)."""
    credentials = await gateway.db.run(gateway.keys.credentials_any_status, user_id, account_no)
    now = gateway.clock()
    try:
        issued = await gateway.client.issue_token(credentials.app_key, credentials.app_secret)
    except CredentialsError:
        await gateway.db.run(mark_key_refused, gateway.db, user_id, account_no, ApiStatus.EXPIRED, now)
        return ApiStatus.EXPIRED
    token = FixedToken(issued.token.get_secret_value())
    probe = KiwoomSession(gateway.client, key_id(user_id, account_no), token)
    if account_digits(account_no) not in await probe.account_numbers():
        await gateway.db.run(mark_key_refused, gateway.db, user_id, account_no, ApiStatus.INACTIVE, now)
        return ApiStatus.INACTIVE
    return None
