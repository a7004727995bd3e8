"""Master keys from settings; in development, a generated key file in the data dir."""

from __future__ import annotations

import logging
import os

from bot.config import ConfigError, Settings, data_dir_ready
from storage.crypto import CryptoError, Vault, generate_key

log = logging.getLogger(__name__)


def load_vault(settings: Settings, *, create: bool = True) -> Vault:
    """The vault for these settings; generates a development key file once if needed."""
    configured = settings.probono_encryption_keys
    if configured is not None and configured.get_secret_value().strip():
        try:
            return Vault.from_setting(configured.get_secret_value())
        except CryptoError as exc:
            raise ConfigError(str(exc)) from exc
    if settings.is_production:
        raise ConfigError("PROBONO_ENV=production needs PROBONO_ENCRYPTION_KEYS")
    path = settings.key_file()
    if path.exists():
        return Vault.from_setting(path.read_text().strip().replace("\n", ","))
    if not create:
        raise ConfigError(f"no PROBONO_ENCRYPTION_KEYS and no key file at {path}")
    data_dir_ready(settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_key() + "\n")
    log.warning(
        "PROBONO_ENCRYPTION_KEYS is not set: generated a development key at %s (mode 0600). "
        "Set PROBONO_ENCRYPTION_KEYS before real client data arrives.",
        path,
    )
    return Vault.from_setting(path.read_text().strip())


def prepend_key_file(settings: Settings) -> str:
    """Put a new key first in the development key file (kept 0600); returns the new key.

    The old keys stay listed so existing data still decrypts until `probono keys rotate`
    has re-encrypted it.
    """
    path = settings.key_file()
    data_dir_ready(settings)
    old = path.read_text().split() if path.exists() else []
    new = generate_key()
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover could carry looser permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join([new, *old]) + "\n")
    # Replace in one step: a crash leaves the old file or the new one, never half of one.
    os.replace(tmp, path)
    return new
