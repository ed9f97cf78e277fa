"""Render a message by key for a locale and an output format.

Templates live in `locales/<locale>/*.toml`: each file maps keys to Jinja2 templates, and a key
is the file's name, a dot, and the entry's name (`onboarding.welcome`). One set of templates
serves every platform: each format has its own environment, which escapes whatever a template
interpolates (user text can never forge formatting) and gives `b()`, `i()`, `code()` and
`link()` their platform's markup.

- "html": Telegram's HTML parse mode (escape `& < > "`).
- "mrkdwn": Slack (escape only `& < >`, as Slack decodes no other entity).
- "plain": the console and button labels.
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Callable
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LOCALE = "en"
FORMATS = ("html", "mrkdwn", "plain")


def escape_html(text: str) -> str:
    return html.escape(text, quote=True)


def escape_mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> str:
    return text


_ESCAPE: dict[str, Callable[[str], str]] = {
    "html": escape_html,
    "mrkdwn": escape_mrkdwn,
    "plain": _plain,
}

# How each format marks up bold, italic, code and links; the argument is already escaped.
_MARKUP: dict[str, dict[str, Callable[..., str]]] = {
    "html": {
        "b": lambda t: f"<b>{t}</b>",
        "i": lambda t: f"<i>{t}</i>",
        "code": lambda t: f"<code>{t}</code>",
        "link": lambda url, t: f'<a href="{url}">{t}</a>',
    },
    "mrkdwn": {
        "b": lambda t: f"*{t}*",
        "i": lambda t: f"_{t}_",
        "code": lambda t: f"`{t}`",
        "link": lambda url, t: f"<{url.replace('|', '%7C')}|{t.replace('|', '¦')}>",
    },
    "plain": {
        "b": lambda t: t,
        "i": lambda t: t,
        "code": lambda t: t,
        "link": lambda url, t: t if t == url else f"{t} ({url})",
    },
}


def _format_date(value: date | datetime) -> str:
    """`9 April 2018`."""
    return f"{value.day} {value:%B %Y}"


def _format_when(value: datetime, tz: str = "UTC") -> str:
    """`9 April 2018, 10:00 (Europe/Berlin)`: an instant in the reader's time zone."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone, tz = ZoneInfo("UTC"), "UTC"
    local = value.astimezone(zone)
    return f"{_format_date(local)}, {local:%H:%M} ({tz})"


class UnknownMessage(KeyError):
    """A template key that no locale defines: a bug, never shown to a person."""


class ShadowedHelper(TypeError):
    """A context key named like a renderer helper (`code`, `b`, ...): it would hide the helper
    from the template, so `{{ code(code) }}` fails. A bug in the caller, never shown to a person."""


# Context keys a caller may give that also name a global: `tz` is a default meant to be replaced.
OVERRIDABLE = frozenset({"tz"})


# A line that holds nothing but a block tag ({% if %}, {% for %}...) leaves no line behind;
# a tag at the end of a line of text keeps that line's newline.
_TAG_LINE = re.compile(r"^([ \t]*\{%[^%]*%\}[ \t]*)\n", re.MULTILINE)


def load_catalog(locale: str) -> dict[str, str]:
    """All templates of one locale, keyed `file.entry`."""
    catalog: dict[str, str] = {}
    folder = LOCALES_DIR / locale
    for path in sorted(folder.glob("*.toml")):
        with path.open("rb") as fh:
            entries = tomllib.load(fh)
        for name, text in entries.items():
            if not isinstance(text, str):
                raise ValueError(f"{path}: {name} is not a string")
            catalog[f"{path.stem}.{name}"] = _TAG_LINE.sub(r"\1", text.strip("\n"))
    return catalog


class Renderer:
    """Turns `(key, locale, format, context)` into text."""

    def __init__(self, default_locale: str = DEFAULT_LOCALE) -> None:
        self.default_locale = default_locale
        # A sentence without context (a label, a command's description) is the same text
        # every time: rendered once. A command menu alone is thirty of them per message.
        self._fixed: dict[tuple[str, str | None, str], str] = {}

    @cached_property
    def locales(self) -> tuple[str, ...]:
        return tuple(sorted(p.name for p in LOCALES_DIR.iterdir() if p.is_dir()))

    @cached_property
    def _templates(self) -> dict[str, str]:
        templates: dict[str, str] = {}
        for locale in self.locales:
            for key, text in load_catalog(locale).items():
                templates[f"{locale}/{key}"] = text
        return templates

    @cached_property
    def _environments(self) -> dict[str, Environment]:
        return {fmt: self._environment(fmt) for fmt in FORMATS}

    def _environment(self, fmt: str) -> Environment:
        escape = _ESCAPE[fmt]
        markup = _MARKUP[fmt]

        def finalize(value: Any) -> Any:
            if isinstance(value, Markup):
                return value
            return Markup(escape("" if value is None else str(value)))

        def safe(value: Any) -> str:
            return value if isinstance(value, Markup) else escape(str(value))

        env = Environment(
            loader=DictLoader(self._templates),
            autoescape=False,
            finalize=finalize,
            undefined=StrictUndefined,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        env.globals.update(
            tz="UTC",  # the reader's time zone, when the context does not give one
            b=lambda t: Markup(markup["b"](safe(t))),
            i=lambda t: Markup(markup["i"](safe(t))),
            code=lambda t: Markup(markup["code"](safe(t))),
            link=lambda url, t=None: Markup(markup["link"](safe(url), safe(t or url))),
        )
        env.filters["date"] = _format_date
        env.filters["when"] = _format_when
        return env

    def render(
        self, key: str, locale: str | None = None, fmt: str = "plain", /, **context: Any
    ) -> str:
        """Render `key` in `locale` (falling back to the default locale) for `fmt`.

        A context key may not be named like a helper (`b`, `i`, `code`, `link`): that raises
        `ShadowedHelper`. `tz` is a default that the context may replace.
        """
        if not context and (text := self._fixed.get((key, locale, fmt))) is not None:
            return text
        env = self._environments[fmt]
        shadowed = sorted(k for k in context if k in env.globals and k not in OVERRIDABLE)
        if shadowed:
            raise ShadowedHelper(f"{key}: context key {', '.join(map(repr, shadowed))} would hide "
                                 f"the renderer's helper of that name; rename the key")
        for loc in (locale, self.default_locale):
            name = f"{loc}/{key}"
            if loc and name in self._templates:
                text = env.get_template(name).render(**context).strip()
                if not context:
                    self._fixed[key, locale, fmt] = text
                return text
        raise UnknownMessage(key)

    def keys(self, locale: str | None = None) -> list[str]:
        prefix = f"{locale or self.default_locale}/"
        return sorted(k[len(prefix):] for k in self._templates if k.startswith(prefix))
