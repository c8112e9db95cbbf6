"""Registering a user's Kiwoom app key: checked with the broker before anything is stored."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import SecretStr

from autotrade.broker.errors import AuthError, BrokerError
from autotrade.broker.session import KiwoomSession
from autotrade.broker.tokens import FixedToken
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
    """Validate the key with the broker (token, then the account's balance and holdings), then seal and
    store it. On any failure nothing is stored."""
    if daily_limit <= 0:
        raise RegistrationRefused("daily_limit must be positive")
    try:
        issued = await gateway.client.issue_token(app_key, app_secret)
        just_issued = FixedToken(issued.token.get_secret_value())
        probe = KiwoomSession(gateway.client, key_id(user_id, account_no), just_issued)
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
