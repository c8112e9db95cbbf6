"""Envelope encryption through both KMS providers: context binding, rotation, crypto-shredding, tokens."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.domain.models import ApiStatus
from autotrade.store.db import Database
from autotrade.store.models import UserApiKey
from autotrade.vault.keys import KeyStore, KeyUnavailable, context
from autotrade.vault.kms import Context, DataKey, KmsError, KmsProvider, LocalKms, open_sealed
from autotrade.vault.tokens import TemporaryTokens, TokenRejected

APP_KEY = SecretStr("PSa1b2c3d4e5f6-app-key-known")
APP_SECRET = SecretStr("s3cr3t-known-app-secret-value-0123456789")


def test_data_key_is_bound_to_its_context(kms: KmsProvider) -> None:
    dk = kms.generate_data_key(context("u1", "11111111"))
    assert kms.decrypt(dk.ciphertext, context("u1", "11111111")) == dk.plaintext
    with pytest.raises(KmsError):
        kms.decrypt(dk.ciphertext, context("u2", "11111111"))
    with pytest.raises(KmsError):
        kms.decrypt(dk.ciphertext, context("u1", "22222222"))
    assert kms.calls["GenerateDataKey"] == 1 and kms.calls["Decrypt"] == 3


def test_local_master_key_file_is_private(tmp_path: Path) -> None:
    LocalKms(tmp_path / "keys" / "master.key")
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / "master.key").st_mode)
    assert mode == 0o600


def test_store_open_rotate_and_shred(kms: KmsProvider, vault_db: Database) -> None:
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name="홍길동", daily_limit=5_000_000)
    with vault_db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey))
        assert row is not None
        stored = " ".join([row.app_key_encrypted, row.app_secret_encrypted, row.encrypted_data_key or ""])
    assert APP_KEY.get_secret_value() not in stored and APP_SECRET.get_secret_value() not in stored
    creds = keys.credentials("u1", "11111111")
    assert creds.app_key.get_secret_value() == APP_KEY.get_secret_value()
    assert creds.app_secret.get_secret_value() == APP_SECRET.get_secret_value()
    # Rotation of the KMS key re-wraps the data key; the sealed values stay and still open.
    keys.rewrap("u1", "11111111")
    assert keys.credentials("u1", "11111111").app_key.get_secret_value() == APP_KEY.get_secret_value()
    # Crypto-shredding: with the data key gone nothing can open the sealed values.
    with vault_db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey))
        assert row is not None
        sealed_key = row.app_key_encrypted
    keys.destroy("u1", "11111111")
    with pytest.raises(KeyUnavailable):
        keys.credentials_any_status("u1", "11111111")
    with vault_db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey))
        assert row is not None and row.encrypted_data_key is None and row.api_status is ApiStatus.DELETED
    other = kms.generate_data_key(
        context("u1", "11111111")
    ).plaintext  # even a fresh key for the same context
    with pytest.raises(KmsError):
        open_sealed(other, sealed_key, b"app_key|u1|11111111")


class Counting:
    """The real provider, with the calls that reach it written down (the provider's own counter is part of
    the code under test)."""

    def __init__(self, inner: KmsProvider) -> None:
        self.inner, self.key_id, self.calls, self.seen = inner, inner.key_id, inner.calls, []

    def generate_data_key(self, context: Context) -> DataKey:
        self.seen.append("GenerateDataKey")
        return self.inner.generate_data_key(context)

    def decrypt(self, ciphertext: bytes, context: Context) -> bytes:
        self.seen.append("Decrypt")
        return self.inner.decrypt(ciphertext, context)

    def re_encrypt(self, ciphertext: bytes, context: Context, new_key_id: str | None = None) -> bytes:
        self.seen.append("ReEncrypt")
        return self.inner.re_encrypt(ciphertext, context, new_key_id)


def _row(db: Database, user: str) -> tuple[str, str, str]:
    with db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey).where(UserApiKey.user_id == user))
        assert row is not None and row.encrypted_data_key is not None
        return row.encrypted_data_key, row.app_key_encrypted, row.app_secret_encrypted


def test_rewrap_runs_reencrypt_and_changes_only_the_wrapped_data_key(
    kms: KmsProvider, vault_db: Database
) -> None:
    """The re-wrap sends the stored data key through one ReEncrypt and nothing else (no Decrypt and
    GenerateDataKey, which would expose the data key to us or make a new one); the stored blob is a new
    ciphertext of the same data key; the sealed app key and secret are byte for byte the same."""
    counting = Counting(kms)
    keys = KeyStore(vault_db, counting)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name=None, daily_limit=1_000_000)
    blob, sealed_key, sealed_secret = _row(vault_db, "u1")
    counting.seen.clear()
    keys.rewrap("u1", "11111111")
    assert counting.seen == ["ReEncrypt"]
    new_blob, new_key, new_secret = _row(vault_db, "u1")
    assert new_blob != blob
    assert (new_key, new_secret) == (sealed_key, sealed_secret)
    ctx = context("u1", "11111111")
    old_dk = kms.decrypt(base64.b64decode(blob), ctx)
    assert kms.decrypt(base64.b64decode(new_blob), ctx) == old_dk
    assert keys.credentials("u1", "11111111").app_secret.get_secret_value() == APP_SECRET.get_secret_value()


def test_the_stored_data_key_opens_only_under_its_own_rows_context(
    kms: KmsProvider, vault_db: Database
) -> None:
    """The key store binds each wrapped data key to its row's user and account: u1's whole row (wrapped
    data key and sealed values) copied onto u2's row is refused by KMS itself (KmsError from Decrypt),
    before any sealed value is tried. Without the binding, Decrypt would hand out u1's data key and only
    the sealed values' associated data would stop it (KeyUnavailable)."""
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name=None, daily_limit=1_000_000)
    keys.store("u2", "22222222", SecretStr("other-app-key-123"), SecretStr("other-secret-456"),
               account_name=None, daily_limit=1_000_000)  # fmt: skip
    blob, sealed_key, sealed_secret = _row(vault_db, "u1")
    assert kms.decrypt(base64.b64decode(blob), {"user_id": "u1", "account_no": "11111111",
                                                  "purpose": "kiwoom-app-key"})  # fmt: skip
    for ctx in ({"user_id": "u2", "account_no": "11111111", "purpose": "kiwoom-app-key"},
                {"user_id": "u1", "account_no": "22222222", "purpose": "kiwoom-app-key"},
                {"user_id": "u1", "account_no": "11111111"}):  # fmt: skip
        with pytest.raises(KmsError):
            kms.decrypt(base64.b64decode(blob), ctx)
    with vault_db.unit_of_work() as s:
        b = s.scalar(sa.select(UserApiKey).where(UserApiKey.user_id == "u2"))
        assert b is not None
        b.encrypted_data_key, b.app_key_encrypted, b.app_secret_encrypted = blob, sealed_key, sealed_secret
    with pytest.raises(KmsError):
        keys.credentials("u2", "22222222")


def test_disabled_key_does_not_decrypt_for_use(kms: KmsProvider, vault_db: Database) -> None:
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name=None, daily_limit=1_000_000)
    keys.set_status("u1", "11111111", ApiStatus.DISABLED)
    with pytest.raises(KeyUnavailable):
        keys.credentials("u1", "11111111")
    assert (
        keys.credentials_any_status("u1", "11111111").app_key.get_secret_value() == APP_KEY.get_secret_value()
    )


def test_sealed_value_does_not_open_in_another_row(kms: KmsProvider, vault_db: Database) -> None:
    """A sealed app key copied onto another user's row does not open there (the AAD names the owner)."""
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name=None, daily_limit=1_000_000)
    keys.store("u2", "22222222", SecretStr("other-app-key-123"), SecretStr("other-secret-456"),
               account_name=None, daily_limit=1_000_000)  # fmt: skip
    with vault_db.unit_of_work() as s:
        a = s.scalar(sa.select(UserApiKey).where(UserApiKey.user_id == "u1"))
        b = s.scalar(sa.select(UserApiKey).where(UserApiKey.user_id == "u2"))
        assert a is not None and b is not None
        b.app_key_encrypted = a.app_key_encrypted
    with pytest.raises(KeyUnavailable):
        keys.credentials("u2", "22222222")


def test_temporary_tokens_scope_expiry_revocation(vault_db: Database) -> None:
    tokens = TemporaryTokens(vault_db, b"k" * 32, timedelta(minutes=5))
    now = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    t = tokens.issue("u1", "11111111", {"account:read", "order:sell"}, spend_cap=None, now=now)
    claims = tokens.verify(t, now=now + timedelta(minutes=4))
    assert (claims.user_id, claims.account_no) == ("u1", "11111111")
    assert claims.actions == {"account:read", "order:sell"}
    with pytest.raises(TokenRejected, match="expired"):
        tokens.verify(t, now=now + timedelta(minutes=5, seconds=1))
    with pytest.raises(TokenRejected, match="invalid"):
        TemporaryTokens(vault_db, b"x" * 32).verify(t, now=now)
    with pytest.raises(TokenRejected, match="invalid"):
        tokens.verify(t[:-3] + "abc", now=now)
    tokens.revoke(t, "test")
    with pytest.raises(TokenRejected, match="revoked"):
        tokens.verify(t, now=now)
    with pytest.raises(ValueError):
        tokens.issue("u1", "11111111", {"order:everything"})
