"""Logging that never shows a secret.

The Bot API URL carries the bot token and httpx logs every request URL at INFO; Bolt logs
rejected request bodies. A filter on every handler replaces each configured secret, and
anything shaped like a Telegram or Slack token, before a line is written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

TOKEN_SHAPES = re.compile(
    r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b"  # Telegram bot token
    r"|\bxox[abposr]-[A-Za-z0-9-]{6,}"  # Slack bot/user tokens
    r"|\bxapp-[A-Za-z0-9-]{6,}"  # Slack app-level token
    r"|(?<=/newsletter/preview/)[A-Za-z0-9._~%-]+"  # a signed preview link (a bearer pass)
)
MASK = "***"


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with every secret masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return TOKEN_SHAPES.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = self.redact(message)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def setup(level: str = "INFO", secrets: Iterable[str] = ()) -> RedactSecrets:
    """Log to stderr with secrets masked; quiet the HTTP clients' per-request lines."""
    redactor = RedactSecrets(secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler", "aiosqlite", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
