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
