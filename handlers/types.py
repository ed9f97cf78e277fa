"""The platform-neutral shapes every adapter translates to and from.

An adapter turns a platform's update into one `Incoming`, hands it to the core, and turns each
`Outgoing` it gets back into that platform's calls. Nothing here knows Telegram or Slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import date, datetime
from typing import Any

PLATFORMS = ("telegram", "slack", "console")
# The longest message the bot takes, and so the longest update: Slack's text inputs and
# message sections hold 3,000 characters, so the same text fits on every platform.
MAX_TEXT = 3000


@dataclass(frozen=True)
class Attachment:
    """A file someone sent; its content stays on the platform until needed."""

    file_id: str
    name: str
    size: int
    mime_type: str


@dataclass(frozen=True)
class Incoming:
    """One thing a person did: a command, free text, a form answer or a whole form."""

    platform: str
    user_id: str
    chat_id: str
    text: str = ""
    private: bool = True
    display_name: str = ""
    # A form control from a button or a modal: "answer", "back", "cancel" or "submit".
    action: str | None = None
    value: str | None = None
    values: dict[str, str] | None = None
    form_version: int | None = None
    attachments: tuple[Attachment, ...] = ()
    locale: str | None = None

    @property
    def command(self) -> str | None:
        """The command named by the text (`/start@fpbot code` -> `start`), lower-case."""
        if not self.text.startswith("/") or self.action:
            return None
        head = self.text[1:].split(maxsplit=1)[0] if len(self.text) > 1 else ""
        return head.split("@", 1)[0].lower() or None

    @property
    def args(self) -> str:
        """What follows the command, stripped."""
        if self.command is None:
            return ""
        parts = self.text.split(maxsplit=1)
        return parts[1].strip() if len(parts) > 1 else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incoming:
        data = dict(data)
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments", ()))
        return cls(**data)


@dataclass(frozen=True)
class Choice:
    """A button or an option: the value the core gets back and the label a person sees."""

    value: str
    label: str


@dataclass(frozen=True)
class FieldView:
    """One field of a form, as a modal shows it (Slack) or a step asks it (Telegram, console)."""

    name: str
    label: str
    kind: str
    required: bool
    max_length: int
    choices: tuple[Choice, ...] = ()
    value: str = ""
    hint: str = ""


@dataclass(frozen=True)
class FormStep:
    """Where a person stands in a form: which field is asked, out of how many."""

    form: str
    title: str
    field: FieldView
    index: int
    total: int
    can_go_back: bool
    version: int
    message_ref: str = ""


@dataclass(frozen=True)
class FormView:
    """A whole form at once, for platforms that show every field together (Slack modals)."""

    form: str
    title: str
    submit_label: str
    fields: tuple[FieldView, ...]
    version: int


@dataclass(frozen=True)
class OutFile:
    """A file the bot sends: an ICS invitation, a CSV export, a newsletter draft."""

    name: str
    mime_type: str
    content: bytes


@dataclass(frozen=True)
class Outgoing:
    """A reply or a notice: a message key and its context, plus what goes with it.

    `private` marks a message that carries personal data: an adapter never posts it in a
    group chat and sends it to the person directly instead.
    `errors` maps a form's field names to sentences, for a modal to show on each field.
    """

    key: str
    context: dict[str, Any] = field(default_factory=dict)
    choices: tuple[Choice, ...] = ()
    step: FormStep | None = None
    form: FormView | None = None
    file: OutFile | None = None
    private: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    closes_form: bool = False
    # The platform message that showed the last step of the form this reply closes, so the
    # adapter can take its buttons away.
    form_message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form, for the inbox and the outbox (what `asdict` gives, the context
        encoded; built field by field: `asdict` deep-copies the context only to have
        `_encode` copy it again, a third of the cost of writing a reply)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["context"] = _encode(self.context)
        data["choices"] = tuple(asdict(c) for c in self.choices)
        data["errors"] = dict(self.errors)
        for name in ("step", "form", "file"):
            if data[name] is not None:
                data[name] = asdict(data[name])
        if self.file is not None:
            data["file"]["content"] = self.file.content.hex()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outgoing:
        data = dict(data)
        data["context"] = _decode(data.get("context", {}))
        data["choices"] = tuple(Choice(**c) for c in data.get("choices", ()))
        if data.get("step"):
            step = dict(data["step"])
            step["field"] = _field_view(step["field"])
            data["step"] = FormStep(**step)
        if data.get("form"):
            form = dict(data["form"])
            form["fields"] = tuple(_field_view(f) for f in form["fields"])
            data["form"] = FormView(**form)
        if data.get("file"):
            f = dict(data["file"])
            f["content"] = bytes.fromhex(f["content"])
            data["file"] = OutFile(**f)
        return cls(**data)


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _encode(asdict(value))
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$datetime"}:
            return datetime.fromisoformat(value["$datetime"])
        if set(value) == {"$date"}:
            return date.fromisoformat(value["$date"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _field_view(data: dict[str, Any]) -> FieldView:
    data = dict(data)
    data["choices"] = tuple(Choice(**c) for c in data.get("choices", ()))
    return FieldView(**data)


@dataclass(frozen=True)
class Route:
    """Where one reply goes: a chat of the platform it came from, with what the adapter needs
    to send it there (`extras`: a message to edit, a modal trigger...). Replies to one
    incoming message share a `lane`, so they go out in order."""

    chat_id: str
    message: Outgoing
    extras: dict[str, Any] = field(default_factory=dict)
    lane: str = ""


STORE_OUTAGE = "errors.store_unavailable"


def is_store_outage(replies: Sequence[Outgoing]) -> bool:
    """True when the core did nothing because the store failed: keep the request, retry later."""
    return [r.key for r in replies] == [STORE_OUTAGE]


class UserError(Exception):
    """Something the person should read and can fix: carries a message key and its context."""

    def __init__(self, key: str, **context: Any) -> None:
        super().__init__(key)
        self.key = key
        self.context = context
