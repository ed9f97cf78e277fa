"""Forms: described once, asked step by step (Telegram, console) or all at once (Slack modals).

The state of a form being filled lives in the `conversation` table, so a restart or a second
instance loses nothing. A wrong answer re-asks the same step with the reason; `/cancel` (or the
Cancel button) drops the form; Back returns to the previous step. A form is never replaced
without asking: a command that would open another while one is open raises `FormSwitch`, and
the person chooses to continue the open form or drop it for the new one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import bindparam, delete, select

from handlers.context import Context
from handlers.types import Choice, FieldView, FormStep, FormView, Incoming, Outgoing, UserError
from storage.models import Conversation

ChoicesFn = Callable[[Context, dict[str, Any]], Awaitable[Sequence[Choice]]]
Condition = Callable[[dict[str, Any]], bool]
Validator = Callable[[Context, str, dict[str, Any]], Awaitable[str]]
Submit = Callable[[Context, dict[str, Any]], Awaitable[list[Outgoing]]]

KINDS = ("text", "multiline", "choice", "email", "url", "date", "files")
SKIP = "_skip"  # answers key: fields given beforehand, never asked
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_FILES = 5
FILE_TYPES = frozenset({
    "application/pdf", "application/msword", "text/plain", "text/csv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "image/jpeg", "image/png",
})
EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
SKIP_WORDS = frozenset({"-", "skip"})
CLEAR_WORDS = frozenset({"none", "clear"})  # an optional answer emptied (when editing)


def check_url(value: str) -> str:
    """A web address as the bot takes it: https only (every prompt says so), one word.

    Raises `UserError` quoting exactly what was given: `forms.http_url` for a plain http://
    address (the same page is nearly always served over https), `forms.bad_url` otherwise.
    """
    parsed = urlparse(value)
    if parsed.scheme.lower() == "http" and parsed.netloc and not any(c.isspace() for c in value):
        raise UserError("forms.http_url", address=value)
    if (parsed.scheme.lower() != "https" or not parsed.netloc
            or any(c.isspace() or c in "<>|" for c in value)):
        raise UserError("forms.bad_url", address=value)
    return value


@dataclass(frozen=True)
class Field:
    """One question of a form."""

    name: str
    label: str  # message key of the question
    kind: str = "text"
    required: bool = True
    max_length: int = 200
    choices: ChoicesFn | None = None
    validate: Validator | None = None
    hint: str | None = None  # message key of a hint shown under the question
    # Asked step by step only when true of the answers before it; a whole form (a modal)
    # always shows the field and keeps its answer only when true at submit.
    only_if: Condition | None = None
    # The context the question and its hint are rendered with, from the answers so far.
    context: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Asked step by step only (a follow-up question): a modal never shows it.
    steps_only: bool = False


@dataclass(frozen=True)
class Form:
    """A form: its fields in order and what happens when it is complete."""

    name: str
    title: str  # message key
    fields: tuple[Field, ...]
    submit: Submit
    submit_label: str = "forms.submit"

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def index(self, name: str) -> int:
        return [f.name for f in self.fields].index(name)


class FormSwitch(Exception):
    """A command would open `form` while another form is open: the person is asked first."""

    def __init__(self, form: Form) -> None:
        super().__init__(form.name)
        self.form = form


async def _choices(ctx: Context, field: Field, answers: dict[str, Any]) -> tuple[Choice, ...]:
    return tuple(await field.choices(ctx, answers)) if field.choices else ()


async def _view(ctx: Context, field: Field, answers: dict[str, Any]) -> FieldView:
    choices = await _choices(ctx, field, answers)
    context = field.context(answers) if field.context else {}
    return FieldView(
        name=field.name,
        label=ctx.label(field.label, **context),
        kind=field.kind,
        required=field.required,
        max_length=field.max_length,
        choices=choices,
        value=_shown(answers.get(field.name, "")),
        hint=ctx.label(field.hint, **context) if field.hint else "",
    )


def _shown(value: Any, choices: Sequence[Choice] = ()) -> str:
    """An answer as text: files by their names; with `choices`, a choice by its label."""
    if isinstance(value, list):
        return ", ".join(str(v.get("name", "")) for v in value if isinstance(v, dict))
    return next((c.label for c in choices if c.value == str(value)), str(value))


def _asked(form: Form, answers: dict[str, Any], *, whole: bool = False) -> list[str]:
    """The names of the fields this form asks, in order (fields given beforehand are not).

    Step by step, a conditional field is asked only when its condition holds; `whole` (a
    modal) lists it always.
    """
    given = set(answers.get(SKIP, ()))
    return [f.name for f in form.fields if f.name not in given
            and not (whole and f.steps_only)
            and (whole or f.only_if is None or f.only_if(answers))]


def _final(form: Form, answers: dict[str, Any]) -> dict[str, Any]:
    """The answers `submit` gets: not the bookkeeping, nor a condition's field it does not hold."""
    dropped = {f.name for f in form.fields if f.only_if is not None and not f.only_if(answers)}
    return {k: v for k, v in answers.items() if k != SKIP and k not in dropped}


def add_files(ctx: Context, field: Field, answers: dict[str, Any]) -> list[dict[str, Any]]:
    """The files attached so far plus the ones in this message, checked for type and size."""
    files = list(answers.get(field.name) or [])
    for a in ctx.incoming.attachments:
        if a.size > MAX_FILE_BYTES:
            raise UserError("forms.file_too_big", name=a.name, limit_mb=MAX_FILE_BYTES // 2**20)
        if a.mime_type not in FILE_TYPES:
            raise UserError("forms.file_type", name=a.name, type=a.mime_type or "?")
        files.append({"platform": ctx.incoming.platform, "file_id": a.file_id, "name": a.name,
                      "size": a.size, "mime_type": a.mime_type})
    if len(files) > MAX_FILES:
        raise UserError("forms.too_many_files", limit=MAX_FILES)
    return files


async def check(ctx: Context, field: Field, raw: str | None, answers: dict[str, Any]) -> Any:
    """The stored form of an answer, or `UserError` saying what is wrong with it."""
    if field.kind == "files":
        return answers.get(field.name) or []
    value = (raw or "").strip()
    if not value or (not field.required and value.lower() in SKIP_WORDS):
        if field.required:
            raise UserError("forms.required")
        return ""
    if len(value) > field.max_length:
        raise UserError("forms.too_long", limit=field.max_length, length=len(value))
    if field.kind == "choice":
        value = _pick(value, await _choices(ctx, field, answers))
    elif field.kind == "email":
        value = value.lower()
        if not EMAIL.match(value):
            raise UserError("forms.bad_email")
    elif field.kind == "url":
        check_url(value)
    elif field.kind == "date":
        try:
            value = date.fromisoformat(value).isoformat()
        except ValueError:
            raise UserError("forms.bad_date") from None
    if field.validate is not None:
        value = await field.validate(ctx, value, answers)
    return value


def _pick(value: str, choices: Sequence[Choice]) -> str:
    """Match a typed answer to a choice: its value, its label, or its number in the list."""
    folded = value.casefold()
    for c in choices:
        if folded in (c.value.casefold(), c.label.casefold()):
            return c.value
    if value.isdigit() and 1 <= int(value) <= len(choices):
        return choices[int(value) - 1].value
    raise UserError("forms.bad_choice")


# Built once: every message reads it (see `handlers.dispatch`).
_CONVERSATION = select(Conversation).where(
    Conversation.platform == bindparam("conversation_platform"),
    Conversation.user_id == bindparam("conversation_user"),
).with_for_update()  # two instances never move the same form at once


async def _conversation(ctx: Context) -> Conversation | None:
    inc = ctx.incoming
    return await ctx.session.scalar(
        _CONVERSATION,
        {"conversation_platform": inc.platform, "conversation_user": inc.user_id})


async def current(ctx: Context) -> Conversation | None:
    """The form this person is filling in, if any."""
    return await _conversation(ctx)


def position(form: Form, conv: Conversation) -> tuple[int, int]:
    """Where the form stands: the question asked now (from 1), out of how many."""
    asked = _asked(form, conv.answers)
    return asked.index(conv.step) + 1, len(asked)


async def _ask(
    ctx: Context, form: Form, conv: Conversation, error: UserError | None = None, *,
    resumed: bool = False, lead: str = "",
) -> Outgoing:
    """The current question; `resumed` when it is shown again after something else, `lead` a
    plain sentence to show above it."""
    field = form.field(conv.step)
    view = await _view(ctx, field, conv.answers)
    index, total = position(form, conv)
    step = FormStep(
        form=form.name,
        title=ctx.label(form.title),
        field=view,
        index=index,
        total=total,
        can_go_back=index > 1,
        version=conv.version,
        message_ref=conv.message_ref,
    )
    errors = {field.name: ctx.label(error.key, **error.context)} if error else {}
    return Outgoing(
        "forms.question",
        {"title": step.title, "question": view.label, "hint": view.hint,
         "index": step.index, "total": step.total, "optional": not field.required,
         "current": _shown(conv.answers.get(field.name, ""), view.choices),
         "files": field.kind == "files", "resumed": resumed, "lead": lead},
        choices=view.choices,
        step=step,
        errors=errors,
        private=True,
    )


async def _whole_view(ctx: Context, field: Field, answers: dict[str, Any]) -> FieldView:
    """A field as a modal shows it: a conditional one is optional there (checked at submit)."""
    shown = await _view(ctx, field, answers)
    return replace(shown, required=False) if field.only_if is not None else shown


async def view(ctx: Context, form: Form, answers: dict[str, Any] | None = None) -> FormView:
    """The whole form, for a modal."""
    answers = answers or {}
    conv = await _conversation(ctx)
    return FormView(
        form=form.name,
        title=ctx.label(form.title),
        submit_label=ctx.label(form.submit_label),
        fields=tuple([await _whole_view(ctx, form.field(name), answers)
                      for name in _asked(form, answers, whole=True)]),
        version=conv.version if conv else 0,
    )


async def start(
    ctx: Context,
    form: Form,
    answers: dict[str, Any] | None = None,
    *,
    given: tuple[str, ...] = (),
    lead: str = "",
) -> Outgoing:
    """Open `form` for the caller and ask its first step.

    `answers` fill fields beforehand (an edit shows them as current values); the fields named
    in `given` are not asked at all. Keys that are not fields are kept for `submit`. `lead` is
    a plain sentence shown above the first question, in the same message as its buttons.
    Raises `FormSwitch` when the caller has a form open: nothing is replaced without asking.
    """
    answers = {**(answers or {}), SKIP: list(given)}
    inc = ctx.incoming
    if await _conversation(ctx) is not None:
        raise FormSwitch(form)
    # A fresh, unguessable-enough start: a button of a form gone can never fit a new one.
    version = secrets.randbelow(900_000) + 100_000
    conv = Conversation(
        platform=inc.platform,
        user_id=inc.user_id,
        form=form.name,
        step=_asked(form, answers)[0],
        answers=answers,
        version=version,
        started_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(conv)
    await ctx.session.flush()
    out = await _ask(ctx, form, conv, lead=lead)
    whole = await view(ctx, form, conv.answers)
    return Outgoing(out.key, out.context, out.choices, out.step, whole, private=True)


async def cancel(ctx: Context) -> bool:
    """Drop the caller's form; False when there was none."""
    inc = ctx.incoming
    result = await ctx.session.execute(
        delete(Conversation).where(
            Conversation.platform == inc.platform, Conversation.user_id == inc.user_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


def title(ctx: Context, conv: Conversation | None) -> str:
    """The title of the form behind a conversation, in the caller's words."""
    form = ctx.forms.get(conv.form) if conv is not None else None
    return ctx.label(form.title) if form is not None else ""


async def cancel_command(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Drop the form the caller is filling in; nothing of it is kept."""
    conv = await current(ctx)
    if not await cancel(ctx):
        return [Outgoing("forms.nothing_to_cancel")]
    return [Outgoing("forms.cancelled", {"title": title(ctx, conv)}, closes_form=True)]


# The commands of the question a FormSwitch asks (handled by the dispatcher, as /back is).
CONTINUE, DROP = "continue", "drop"


async def ask_switch(ctx: Context, conv: Conversation, new: Form) -> Outgoing:
    """Ask whether to continue the open form or drop it for `new`; the command waits."""
    form = ctx.forms[conv.form]
    conv.switch_to = ctx.incoming.text
    await ctx.session.flush()
    index, total = position(form, conv)
    current_title, new_title = ctx.label(form.title), ctx.label(new.title)
    return Outgoing(
        "forms.switch",
        {"title": current_title, "index": index, "total": total, "new_title": new_title,
         "same": form.name == new.name},
        choices=(Choice(f"/{CONTINUE}", ctx.label("forms.continue_button", title=current_title)),
                 Choice(f"/{DROP}", ctx.label("forms.drop_button", title=current_title,
                                              new_title=new_title,
                                              same=form.name == new.name))),
        private=True,
    )


async def take_switch(ctx: Context, conv: Conversation) -> str | None:
    """Drop the open form for the command that waits on it; returns that command's text.

    None when no command waits (an old button, the form moved on since): nothing is dropped.
    """
    waiting = conv.switch_to
    if not waiting:
        return None
    await ctx.session.delete(conv)
    await ctx.session.flush()
    return waiting


async def resume(ctx: Context, form: Form, conv: Conversation) -> Outgoing:
    """The open form's question again, after a command answered in the middle of it."""
    if conv.switch_to:
        conv.switch_to = ""
        await ctx.session.flush()
    return await _ask(ctx, form, conv, resumed=True)


async def proceed(ctx: Context, form: Form, conv: Conversation) -> list[Outgoing]:
    """Take the caller's answer (or Back) for the current step and move the form on."""
    inc = ctx.incoming
    if inc.form_version is not None and inc.form_version != conv.version:
        return [Outgoing("forms.stale", private=True), await _ask(ctx, form, conv)]
    names = _asked(form, conv.answers)
    if inc.action == "back":
        i = names.index(conv.step)
        conv.step = names[max(i - 1, 0)]
        return [await _advance(ctx, form, conv)]
    field = form.field(conv.step)
    raw = inc.value if inc.value is not None else inc.text
    current = conv.answers.get(field.name)
    keep = inc.action == "skip" or (raw or "").strip().lower() in SKIP_WORDS
    # An optional answer that has a value is emptied with a clear word ("none").
    clear = (not field.required and field.kind != "files" and current not in (None, "")
             and (raw or "").strip().lower() in CLEAR_WORDS)
    try:
        if field.kind == "files" and inc.attachments:
            conv.answers = {**conv.answers, field.name: add_files(ctx, field, conv.answers)}
            return [await _advance(ctx, form, conv)]  # more files, or Done
        if field.kind == "files" and not keep and (raw or "").strip():
            raise UserError("forms.files_expected")
        if clear:
            answer = await check(ctx, field, "", conv.answers)
        elif keep and current not in (None, "") and field.kind != "files":
            answer = await check(ctx, field, str(current), conv.answers)  # kept, checked again
        else:
            answer = await check(ctx, field, "" if keep else raw, conv.answers)
    except UserError as err:
        return [await _ask(ctx, form, conv, err)]
    conv.answers = {**conv.answers, field.name: answer}
    names = _asked(form, conv.answers)  # the answer may bring a conditional question in or out
    i = names.index(conv.step)
    if i + 1 < len(names):
        conv.step = names[i + 1]
        return [await _advance(ctx, form, conv)]
    answers = _final(form, conv.answers)
    await ctx.session.delete(conv)
    await ctx.session.flush()
    return await _submit(ctx, form, answers)


async def _submit(ctx: Context, form: Form, answers: dict[str, Any]) -> list[Outgoing]:
    """Run the form's submit; if it refuses, its writes are undone and the form stays closed."""
    try:
        async with ctx.session.begin_nested():
            return await form.submit(ctx, answers)
    except UserError as err:
        return [Outgoing(err.key, dict(err.context), closes_form=True)]


async def _advance(ctx: Context, form: Form, conv: Conversation) -> Outgoing:
    conv.version += 1
    conv.updated_at = ctx.now
    conv.switch_to = ""  # the form moved on: a question about replacing it is answered
    await ctx.session.flush()
    return await _ask(ctx, form, conv)


async def submit_all(ctx: Context, form: Form, values: dict[str, str]) -> list[Outgoing]:
    """Validate a whole form at once (a modal); errors come back on their fields."""
    conv = await _conversation(ctx)
    version = ctx.incoming.form_version
    if conv is None or conv.form != form.name or version not in (None, conv.version):
        return [Outgoing("forms.stale_modal", private=True)]
    answers: dict[str, Any] = dict(conv.answers)
    errors: dict[str, str] = {}
    for name in _asked(form, answers, whole=True):
        field = form.field(name)
        if field.only_if is not None and not field.only_if(answers):
            answers[field.name] = ""  # not asked for these answers: whatever was typed is moot
            continue
        try:
            answers[field.name] = await check(ctx, field, values.get(field.name), answers)
        except UserError as err:
            errors[field.name] = ctx.label(err.key, **err.context)
    if errors:
        return [Outgoing("forms.invalid", {"count": len(errors)}, errors=errors, private=True)]
    await cancel(ctx)
    return await _submit(ctx, form, _final(form, answers))
