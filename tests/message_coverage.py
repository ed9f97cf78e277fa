"""Every reply rendered, every message key produced: the checks behind `tests/conftest.py`.

- `render_everywhere(renderer, out)` renders one `Outgoing` the way the adapters do, in plain,
  Telegram HTML and Slack mrkdwn, and checks the sentences that come with it (button labels,
  a form step's question and hint, field errors). The transcript calls it on every reply and
  notice, so a broken template fails any test that reaches it, whatever the test asserts.
- `RenderLog` watches `Renderer.render` during the suite and keeps, per message key, the
  contexts the bot's own code (handlers, adapters, the transcript's rendering of their
  replies) rendered it with. Calls made directly from a test module do not count: a test's
  hand-made context is not what a handler gives.
- `catalog_problems()` then renders every key of every locale, in every format, with each
  context seen, and names each key the suite never produced.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from bot.adapters import slack_blocks as kit
from bot.adapters.rendering import message_text
from bot.adapters.telegram import keyboard, split_message
from handlers.dispatch import Core
from handlers.types import Choice, FieldView, Incoming, Outgoing
from messages import FORMATS, Renderer
from tests.fakes import validate

SAMPLES_PER_KEY = 20
# Callers whose renders count as the bot's own: everything outside tests/, plus these.
COUNTED_TEST_MODULES = frozenset({"tests.conftest", "tests.message_coverage"})


def _labelled(what: str, text: object, given: str = "") -> None:
    """Not blank, and no template code left in it (unless a person typed it: `given`)."""
    assert isinstance(text, str) and text.strip(), f"{what} is blank: {text!r}"
    for tag in ("{{", "{%"):
        assert tag not in text or tag in given, f"{what} holds template code: {text!r}"


def _strings(value: object) -> str:
    """Every string in a context, joined: what people typed, which may hold anything."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_strings(v) for v in value.values())
    if isinstance(value, list | tuple):
        return "\n".join(_strings(v) for v in value)
    return ""


def _choices(what: str, choices: Iterable[Choice]) -> None:
    for c in choices:
        _labelled(f"{what} label of {c.value!r}", c.label)


def _field(field: FieldView) -> None:
    _labelled(f"field {field.name}", field.label)
    if field.hint:
        _labelled(f"hint of field {field.name}", field.hint)
    _choices(f"choice of field {field.name}", field.choices)


def render_everywhere(renderer: Renderer, out: Outgoing, locale: str = "en") -> dict[str, str]:
    """`{format: text}` of one reply as every adapter shows it; raises on any broken part."""
    texts = {fmt: message_text(renderer, out, locale, fmt) for fmt in FORMATS}
    for fmt, text in texts.items():
        _labelled(f"{out.key} in {fmt}", text, _strings(out.context))
    _choices(f"{out.key}: button", out.choices)
    if out.step is not None:
        _labelled(f"{out.key}: form title", out.step.title)
        _field(out.step.field)
    if out.form is not None:
        _labelled(f"{out.key}: modal title", out.form.title)
        _labelled(f"{out.key}: modal submit", out.form.submit_label)
        for field in out.form.fields:
            _field(field)
    for name, error in out.errors.items():
        _labelled(f"{out.key}: error on {name}", error)
    problems = payload_problems(renderer, out, locale, texts)
    assert not problems, f"{out.key}: the platforms would refuse it: {problems}"
    return texts


def payload_problems(renderer: Renderer, out: Outgoing, locale: str,
                     texts: dict[str, str]) -> list[str]:
    """What Telegram and Slack would refuse in the payloads the adapters build for `out`."""
    def say(key: str) -> str:
        return renderer.render(key, locale, "plain")

    problems: list[str] = []
    markup = keyboard(out, {name: say(f"forms.{name}") for name in ("back", "skip", "cancel")})
    for chunk in split_message(texts["html"], texts["plain"]):
        params: dict[str, Any] = {"text": chunk, "parse_mode": "HTML"}
        error = validate.telegram_check("sendMessage", params)
        if error:
            problems.append(f"telegram: {error}")
    if markup is not None:
        error = validate.telegram_check("sendMessage", {"text": "x",
                                                        "reply_markup": markup.to_dict()})
        if error:
            problems.append(f"telegram keyboard: {error}")
    labels = {"back": say("forms.back"), "skip": say("forms.skip"),
              "cancel": say("forms.cancel"), "choose": say("slack.choose")}
    for blocks in kit.message_blocks(texts["mrkdwn"], choices=out.choices, step=out.step,
                                     labels=labels):
        problems += [f"slack: {e}" for e in validate.block_errors(blocks)]
    if out.form is not None:
        problems += [f"slack modal: {e}" for e in validate.view_errors(kit.modal(out.form, labels))]
    return problems


class RenderLog:
    """The contexts each message key was rendered with by the bot's own code.

    It also renders every reply `Core.handle` returns anywhere in the suite (a test that calls
    the core directly, an adapter test), keeping each failure in `broken` for the test's
    teardown to report: raising inside the core's caller could be swallowed by an adapter.
    """

    def __init__(self) -> None:
        self.contexts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.broken: list[str] = []
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._original: Callable[..., str] | None = None
        self._original_handle: Callable[..., Any] | None = None

    def record(self, key: str, context: dict[str, Any]) -> None:
        signature = repr(sorted(context.items()))
        if signature in self._seen[key] or len(self.contexts[key]) >= SAMPLES_PER_KEY:
            return
        self._seen[key].add(signature)
        self.contexts[key].append(dict(context))

    def install(self) -> None:
        """Watch every `Renderer.render` (the real one still does the work)."""
        original = self._original = Renderer.render
        log = self

        def render(self: Renderer, key: str, locale: str | None = None, fmt: str = "plain",
                   /, **context: Any) -> str:
            text = original(self, key, locale, fmt, **context)
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if not caller.startswith("tests.") or caller in COUNTED_TEST_MODULES:
                log.record(key, context)
            return text

        Renderer.render = render  # type: ignore[method-assign]

        handle = self._original_handle = Core.handle

        async def handle_and_render(self: Core, inc: Incoming, *args: Any,
                                    **kwargs: Any) -> list[Outgoing]:
            replies: list[Outgoing] = await handle(self, inc, *args, **kwargs)
            for reply in replies:
                try:
                    render_everywhere(self.renderer, reply, str(reply.context.get("locale") or "en"))
                except Exception as exc:  # reported by the test's teardown
                    log.broken.append(f"{reply.key}: {type(exc).__name__}: {exc}")
            return replies

        Core.handle = handle_and_render  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            Renderer.render = self._original  # type: ignore[method-assign]
            self._original = None
        if self._original_handle is not None:
            Core.handle = self._original_handle  # type: ignore[method-assign]
            self._original_handle = None

    def take_broken(self) -> list[str]:
        taken, self.broken = self.broken, []
        return taken

    def catalog_problems(self, renderer: Renderer) -> list[str]:
        """Each key never produced, and each (key, locale, format, context) that fails."""
        return unsaid(renderer, set(self.contexts)) + self.render_problems(renderer)

    def render_problems(self, renderer: Renderer) -> list[str]:
        """Each (key, locale, format, context) said in this process that fails to render."""
        render = self._original or Renderer.render
        problems: list[str] = []
        for locale in renderer.locales:
            for key in renderer.keys(locale):
                for context in self.contexts.get(key, ()):
                    for fmt in FORMATS:
                        try:
                            render(renderer, key, locale, fmt, **context)
                        except Exception as exc:  # every failure is reported, not the first
                            problems.append(f"{locale}/{key} ({fmt}) with {context!r}: "
                                            f"{type(exc).__name__}: {exc}")
        return problems


def unsaid(renderer: Renderer, said: set[str]) -> list[str]:
    """Each key of each locale that no test made the bot say."""
    return [f"{locale}/{key}: no test makes the bot say it"
            for locale in renderer.locales for key in renderer.keys(locale) if key not in said]
