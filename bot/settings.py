"""Settings, from the environment or a `.env` file beside where the bot runs.

Secrets (tokens, signing secrets) are kept in `Secret` so that no repr, log line or error can
show them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from storage.db import DEFAULT_URL


class Secret(str):
    """A string that never shows itself in a repr."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines; blank lines and # comments ignored; quotes around values removed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_URL
    timezone: str = "UTC"
    telegram_token: Secret = Secret("")
    telegram_api_url: str = "https://api.telegram.org/bot"
    telegram_webhook_secret: Secret = Secret("")
    slack_bot_token: Secret = Secret("")
    slack_signing_secret: Secret = Secret("")
    slack_app_token: Secret = Secret("")
    slack_api_url: str = "https://slack.com/api/"
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    files_dir: str = "fpbot-files"  # where the console writes the files the bot sends
    secret_key: Secret = Secret("")
    public_url: str = ""
    digest_cron: str = "0 9 * * mon"
    digest_timezone: str = ""

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, env_file: Path | None = None) -> Settings:
        """Environment variables win over the `.env` file."""
        env = read_env_file(env_file or Path(".env"))
        env.update(os.environ if environ is None else environ)
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_URL,
            timezone=env.get("FPBOT_TIMEZONE") or "UTC",
            telegram_token=Secret(env.get("TELEGRAM_TOKEN", "")),
            telegram_api_url=env.get("TELEGRAM_API_URL") or cls.telegram_api_url,
            telegram_webhook_secret=Secret(env.get("TELEGRAM_WEBHOOK_SECRET", "")),
            slack_bot_token=Secret(env.get("SLACK_BOT_TOKEN", "")),
            slack_signing_secret=Secret(env.get("SLACK_SIGNING_SECRET", "")),
            slack_app_token=Secret(env.get("SLACK_APP_TOKEN", "")),
            slack_api_url=env.get("SLACK_API_URL") or cls.slack_api_url,
            host=env.get("HOST") or "127.0.0.1",
            port=int(env.get("PORT") or 8080),
            log_level=(env.get("FPBOT_LOG_LEVEL") or "INFO").upper(),
            files_dir=env.get("FPBOT_FILES_DIR") or "fpbot-files",
            secret_key=Secret(env.get("FPBOT_SECRET_KEY", "")),
            public_url=env.get("FPBOT_PUBLIC_URL", ""),
            digest_cron=env.get("FPBOT_DIGEST_CRON") or cls.digest_cron,
            digest_timezone=env.get("FPBOT_DIGEST_TIMEZONE") or "",
        )

    @property
    def secrets(self) -> list[str]:
        """Every secret value set, for the log filter to redact."""
        return [s for s in (self.telegram_token, self.telegram_webhook_secret,
                            self.slack_bot_token, self.slack_signing_secret,
                            self.slack_app_token, self.secret_key) if s]

    @property
    def platforms(self) -> list[str]:
        found = []
        if self.telegram_token:
            found.append("telegram")
        if self.slack_bot_token:
            found.append("slack")
        return found
