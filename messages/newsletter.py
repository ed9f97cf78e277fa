"""The newsletter draft's templates (HTML for e-mail, Markdown), beside this file in `newsletter/`.

The HTML environment autoescapes everything a template interpolates, so no submission can
inject markup; the Markdown one backslash-escapes every character Markdown gives a meaning to.
Headings and sentences come from `locales/<language>/newsletter.toml` through `t(...)`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jinja2.ext import Extension
from markupsafe import Markup

TEMPLATES_DIR = Path(__file__).parent / "newsletter"
STYLESHEET = TEMPLATES_DIR / "newsletter.css"

# CommonMark lets any ASCII punctuation be backslash-escaped. These mean something anywhere
# (emphasis, code, links, HTML, tables, strike-through, entities)...
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~&])")
# ...and these only at the start of a line (headings, lists, setext underlines, ordered lists).
_MD_LINE_START = re.compile(r"^([#+\-=]|\d+(?=[.)]))")


def escape_markdown(text: str) -> str:
    """Text that Markdown shows exactly as written; each input line stays a line."""
    lines = []
    for line in text.splitlines() or [""]:
        line = _MD_INLINE.sub(r"\\\1", line.strip())
        line = _MD_LINE_START.sub(lambda m: m.group(1) + "\\" if m.group(1).isdigit()
                                  else "\\" + m.group(1), line)
        lines.append(line)
    return "  \n".join(lines)


def _md_finalize(value: Any) -> Any:
    if isinstance(value, Markup):
        return value
    return escape_markdown("" if value is None else str(value))


def _autolink_target(url: str) -> Markup:
    """A URL inside a Markdown autolink `<...>`: no backslash escapes there, so percent-encode."""
    return Markup(quote(url, safe="/:?#[]@!$&'()*+,;=%~-._"))


class InlineStyles(Extension):
    """Writes each `{{ styled("name") }}` of a template as the attributes it stands for:
    `class="name" style="…"`, the declarations css-inline gives an element of that class.

    E-mail clients drop `<style>` blocks, so every element carries its declarations. They are
    worked out once, when the template is compiled, by css-inline itself on an element of each
    class alone, not for every draft: inlining a whole 2,000-item draft took as long as
    rendering it. This holds while every rule of the stylesheet selects one class (or `body`),
    which `tests/test_newsletter.py` checks by inlining a rendered draft again.
    """

    CALL = re.compile(r'\{\{ styled\("([a-z][a-z-]*)"(?:, "([a-z]+)")?\) \}\}')

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return self.CALL.sub(lambda m: class_style(m.group(1), m.group(2) or "div"), source)


class DraftTemplates:
    """Renders a draft's context as e-mail HTML or Markdown."""

    def __init__(self) -> None:
        loader = FileSystemLoader(TEMPLATES_DIR)
        self.html_env = Environment(loader=loader, autoescape=True, undefined=StrictUndefined,
                                    trim_blocks=True, lstrip_blocks=True,
                                    extensions=[InlineStyles])
        self.md_env = Environment(loader=loader, autoescape=False, finalize=_md_finalize,
                                  undefined=StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True)
        self.md_env.filters["urlencode_md"] = _autolink_target

    def html(self, t: Callable[..., str], **context: Any) -> str:
        """The draft as one e-mail HTML document, its styles already inline."""
        return self.html_env.get_template("draft.html.j2").render(t=t, **context)

    def markdown(self, t: Callable[..., str], **context: Any) -> str:
        return self.md_env.get_template("draft.md.j2").render(t=t, **context).strip() + "\n"


def stylesheet() -> str:
    return STYLESHEET.read_text(encoding="utf-8")


@functools.cache
def _inliner() -> Any:
    """css-inline with the stylesheet, made when the first HTML template is compiled."""
    import css_inline

    return css_inline.CSSInliner(extra_css=stylesheet(), keep_style_tags=False,
                                 load_remote_stylesheets=False)


@functools.cache
def class_style(name: str, tag: str = "div") -> str:
    """css-inline's declarations for a `tag` of class `name` under the stylesheet, as the
    element's `class` and `style` attributes."""
    element = (f'<body class="{name}"></body>' if tag == "body"
               else f'<body><{tag} class="{name}"></{tag}></body>')
    found = _StyleOf(tag, name)
    found.feed(_inliner().inline(f"<!DOCTYPE html><html><head></head>{element}</html>"))
    found.close()
    return str(Markup('class="{}"').format(name) + (
        Markup(' style="{}"').format(found.style) if found.style else Markup("")))


class _StyleOf(HTMLParser):
    """The style attribute of the first `tag` of class `name` in a document."""

    def __init__(self, tag: str, name: str) -> None:
        super().__init__()
        self.tag, self.name, self.style = tag, name, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == self.tag and found.get("class") == self.name and not self.style:
            self.style = found.get("style") or ""
