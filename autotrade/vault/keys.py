"""Envelope encryption of users' broker keys in ``user_api_keys``.

One data key per user and account from KMS ``GenerateDataKey`` with the encryption context
``{"user_id", "account_no"}``; app key and secret sealed with AES-GCM whose associated data names the field,
the user and the account (a sealed value moved to another row or field does not open). Only the encrypted
data key is stored. Deleting destroys it: the sealed values can never be opened again (crypto-shredding).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.broker.messages import Credentials
from autotrade.domain.models import ApiStatus
from autotrade.store.db import Database
from autotrade.store.models import UserApiKey
from autotrade.store.repositories import Users
from autotrade.vault.kms import KmsError, KmsProvider, open_sealed, seal


class KeyUnavailable(Exception):
    """No usable key for this user and account (missing, disabled, deleted)."""


def context(user_id: str, account_no: str) -> dict[str, str]:
    return {"user_id": user_id, "account_no": account_no, "purpose": "kiwoom-app-key"}


def _aad(name: str, user_id: str, account_no: str) -> bytes:
    return f"{name}|{user_id}|{account_no}".encode()


@dataclass(frozen=True, slots=True)
class StoredKey:
    user_id: str
    account_no: str
    api_status: ApiStatus


class KeyStore:
    def __init__(self, db: Database, kms: KmsProvider) -> None:
        self.db = db
        self.kms = kms

    def store(
        self,
        user_id: str,
        account_no: str,
        app_key: SecretStr,
        app_secret: SecretStr,
        *,
        account_name: str | None,
        daily_limit: int,
    ) -> None:
        """Seal and store (or replace) the key of one user's account."""
        dk = self.kms.generate_data_key(context(user_id, account_no))
        sealed_key = seal(dk.plaintext, app_key.get_secret_value(), _aad("app_key", user_id, account_no))
        sealed_secret = seal(
            dk.plaintext, app_secret.get_secret_value(), _aad("app_secret", user_id, account_no)
        )
        with self.db.unit_of_work() as s:
            users = Users(s)
            user = users.ensure(user_id)
            users.ensure_account(user_id, account_no, account_name)
            row = s.scalar(
                sa.select(UserApiKey).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )
            if row is None:
                row = UserApiKey(user_id=user_id, account_no=account_no)
                s.add(row)
                row.key_version = 1
            else:
                row.key_version = (row.key_version or 0) + 1
            row.app_key_encrypted = sealed_key
            row.app_secret_encrypted = sealed_secret
            row.encrypted_data_key = base64.b64encode(dk.ciphertext).decode()
            row.kms_key_id = self.kms.key_id
            row.account_name = account_name
            row.api_status = ApiStatus.ACTIVE
            row.daily_limit = daily_limit
            row.registered_at = datetime.now(UTC)
            user.has_api_key = True

    def credentials(self, user_id: str, account_no: str) -> Credentials:
        """Decrypt (one KMS Decrypt) the key of an ACTIVE account. Callers keep the result only as long as
        the call that needs it."""
        return self._credentials(user_id, account_no, active_only=True)

    def credentials_any_status(self, user_id: str, account_no: str) -> Credentials:
        """The key of a disabled account too: the kill switch needs it to revoke the broker token."""
        return self._credentials(user_id, account_no, active_only=False)

    def _credentials(self, user_id: str, account_no: str, *, active_only: bool) -> Credentials:
        with self.db.unit_of_work() as s:
            row = s.scalar(
                sa.select(UserApiKey).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )
            if row is None or row.encrypted_data_key is None:
                raise KeyUnavailable("no key registered for this account")
            if active_only and row.api_status is not ApiStatus.ACTIVE:
                raise KeyUnavailable(f"key is {row.api_status.value}")
            blob, sealed_key, sealed_secret = (
                row.encrypted_data_key,
                row.app_key_encrypted,
                row.app_secret_encrypted,
            )
        data_key = self.kms.decrypt(base64.b64decode(blob), context(user_id, account_no))
        try:
            return Credentials(
                app_key=SecretStr(open_sealed(data_key, sealed_key, _aad("app_key", user_id, account_no))),
                app_secret=SecretStr(
                    open_sealed(data_key, sealed_secret, _aad("app_secret", user_id, account_no))
                ),
            )
        except KmsError:
            raise KeyUnavailable("stored key does not open") from None

    def rewrap(self, user_id: str, account_no: str, new_key_id: str | None = None) -> None:
        """KMS key rotation: re-encrypt the data key under the (new) KMS key; sealed values are unchanged."""
        with self.db.unit_of_work() as s:
            row = s.scalar(
                sa.select(UserApiKey).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )
            if row is None or row.encrypted_data_key is None:
                raise KeyUnavailable("no key registered for this account")
            blob = self.kms.re_encrypt(
                base64.b64decode(row.encrypted_data_key), context(user_id, account_no), new_key_id
            )
            row.encrypted_data_key = base64.b64encode(blob).decode()
            row.kms_key_id = new_key_id or self.kms.key_id

    def destroy(self, user_id: str, account_no: str) -> None:
        """Crypto-shred: drop the data key; the sealed values stay but can never be opened."""
        with self.db.unit_of_work() as s:
            row = s.scalar(
                sa.select(UserApiKey).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )
            if row is None:
                raise KeyUnavailable("no key registered for this account")
            row.encrypted_data_key = None
            row.api_status = ApiStatus.DELETED
            row.is_auto_trading_enabled = False

    def set_status(self, user_id: str, account_no: str, status: ApiStatus) -> None:
        with self.db.unit_of_work() as s:
            row = s.scalar(
                sa.select(UserApiKey).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )
            if row is not None:
                row.api_status = status
                if status is not ApiStatus.ACTIVE:
                    row.is_auto_trading_enabled = False
