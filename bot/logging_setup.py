"""Logging that never prints client data: handlers log ids and outcomes, never bodies or numbers."""

from __future__ import annotations

import logging
import re
import sys

# Last line of defence: anything that looks like a phone number is masked in every record.
_PHONE_RE = re.compile(r"\+?\d[\d\-\s().]{8,}\d")


class RedactingFilter(logging.Filter):
    """Masks phone-number-like digit runs in log messages and their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if _PHONE_RE.search(msg):
            record.msg = _PHONE_RE.sub("[redacted]", msg)
            record.args = None
        return True


def setup_logging(*, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Libraries that log URLs with phone numbers or tokens in them stay quiet.
    for noisy in ("httpx", "aiohttp.access", "twilio.http_client", "telegram", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
