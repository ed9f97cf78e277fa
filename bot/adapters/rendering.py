"""Turn an `Outgoing` into the text one platform shows; shared by every adapter."""

from __future__ import annotations

from collections.abc import Callable

from handlers.types import Outgoing
from messages import Renderer, escape_html, escape_mrkdwn


def _as_is(text: str) -> str:
    return text


_ESCAPE: dict[str, Callable[[str], str]] = {
    "html": escape_html, "mrkdwn": escape_mrkdwn, "plain": _as_is,
}
_WARN = {"html": "⚠️ {}", "mrkdwn": ":warning: {}", "plain": "! {}"}


def message_text(renderer: Renderer, out: Outgoing, locale: str, fmt: str) -> str:
    """The message's sentence in `fmt`, preceded by any field errors (for step-by-step forms)."""
    body = renderer.render(out.key, locale, fmt, **out.context)
    if not out.errors or out.form is not None and out.step is None:
        return body
    escape = _ESCAPE[fmt]
    warnings = [_WARN[fmt].format(escape(e)) for e in out.errors.values()]
    return "\n".join([*warnings, body])
