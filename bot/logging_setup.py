"""Logging that never prints client data: handlers log ids and outcomes, never bodies or numbers.

Two formats (``LOG_FORMAT``): ``text`` for a terminal, ``json`` for a log collector, one
object per line with ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` and the ids a
call passed with ``extra=`` (only the names in ``LOG_IDS``: anything else a caller attaches
could be client data, so it is dropped rather than trusted).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

# Last line of defence: anything that looks like a phone number is masked in every record.
_PHONE_RE = re.compile(r"\+?\d[\d\-\s().]{8,}\d")

# The ``extra=`` names a JSON line carries, in this order: ids and references, never content.
LOG_IDS = (
    "message_id",
    "outbox_id",
    "client_id",
    "case_id",
    "case_reference",
    "staff_id",
    "scheduled_id",
    "broadcast_id",
    "channel",
    "kind",
    "outcome",
)


def _mask(text: str) -> str:
    return _PHONE_RE.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    """Masks phone-number-like digit runs in log messages and their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if _PHONE_RE.search(msg):
            record.msg = _mask(msg)
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event and the allowed ids."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in LOG_IDS:
            value = record.__dict__.get(name)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int):
                out[name] = value
            elif isinstance(value, str):
                out[name] = _mask(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The class and where it was raised; an exception's message can quote its input.
            out["exc_type"] = record.exc_info[0].__name__
            out["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(
    *, verbose: bool = False, fmt: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every record to ``stream`` (standard error) in ``fmt``, phone-like digits masked."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Libraries that log URLs with phone numbers or tokens in them stay quiet.
    for noisy in ("httpx", "aiohttp.access", "twilio.http_client", "telegram", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
