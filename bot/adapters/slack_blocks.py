"""Block Kit for the Slack adapter: messages, form steps, modals and the App Home, as JSON.

Pure functions of already-rendered text: nothing here calls Slack or the core. Every limit
that Block Kit enforces (and that Slack would answer `invalid_blocks` for) is kept here, from
docs.slack.dev/reference/block-kit: 3,000 characters per section, 50 blocks per message,
100 per modal or Home tab, 25 elements per actions block, 75 characters per button label,
24 per modal title, 150 per option value, 100 options per select, 3,000 of private_metadata.

Action ids name what a control does, and the adapter routes on them:

- ``cmd:<n>``: a button whose value is a command line (``/requests approve 12``);
- ``form:answer:<n>``, ``form:select``, ``form:date``: an answer to the current form step;
- ``form:back``, ``form:skip``, ``form:cancel``: the step controls.

A step's blocks carry the form version in their block id (``form:<version>:...``), so a press
on the buttons of an earlier step is recognised as stale by the core.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from handlers.types import Choice, FieldView, FormStep, FormView

Block = dict[str, Any]

SECTION_MAX = 3000
FALLBACK_MAX = 3000
MESSAGE_BLOCKS = 50
SURFACE_BLOCKS = 100
ACTIONS_MAX = 25
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
OPTION_VALUE_MAX = 150
OPTIONS_MAX = 100
TITLE_MAX = 24
HEADER_MAX = 150
LABEL_MAX = 2000
INPUT_MAX = 3000
METADATA_MAX = 3000
BUTTONS_PER_STEP = 10  # more choices than this become a select menu

VALUE_ACTION = "value"  # the action id of every modal input


def plain(text: str, limit: int = LABEL_MAX) -> dict[str, Any]:
    """A plain_text object, shortened to `limit` characters."""
    return {"type": "plain_text", "text": shorten(text, limit) or " ", "emoji": True}


def shorten(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def split_text(text: str, limit: int = SECTION_MAX) -> list[str]:
    """Cut mrkdwn into pieces of at most `limit` characters, at line ends where possible.

    A piece never ends inside an escape (`&lt;`), so no cut can produce markup.
    """
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
            amp = rest.rfind("&", cut - 5, cut)
            if amp != -1 and ";" not in rest[amp:cut]:
                cut = amp
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n")
    if rest:
        pieces.append(rest)
    return pieces or [" "]


def sections(text: str) -> list[Block]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in split_text(text)]


_LONE_BOLD = re.compile(r"\*([^*\n]+)\*")
_PARAGRAPHS = re.compile(r"\n[ \t]*\n")


def report(text: str) -> list[Block] | None:
    """A report's blocks (the weekly digest, a list of parts under their titles): a header
    from its title line, then each part in its own section, divided. None when the text is
    not shaped as one: a title alone on the first line, then at least two parts that each
    begin with a bold title."""
    parts = [p.strip() for p in _PARAGRAPHS.split(text.strip()) if p.strip()]
    if len(parts) < 3 or not (title := _LONE_BOLD.fullmatch(parts[0])):
        return None
    if not all(p.startswith("*") for p in parts[1:]):
        return None
    blocks: list[Block] = [{"type": "header",
                            "text": plain(html.unescape(title.group(1)), HEADER_MAX)}]
    for n, part in enumerate(parts[1:]):
        if n:
            blocks.append({"type": "divider"})
        blocks += sections(part)
    return blocks


def fallback(text: str) -> str:
    """The `text` of a message with blocks: what notifications and screen readers show."""
    return shorten(text, FALLBACK_MAX)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def command_buttons(choices: Sequence[Choice], block_prefix: str = "cmd") -> list[Block]:
    """Actions blocks with one button per choice; pressing one sends its command line."""
    blocks: list[Block] = []
    for n, group in enumerate(_chunks(list(choices), ACTIONS_MAX)):
        elements = []
        for i, choice in enumerate(group, start=n * ACTIONS_MAX):
            if len(choice.value) > BUTTON_VALUE_MAX:
                raise ValueError(f"button value longer than {BUTTON_VALUE_MAX} characters")
            elements.append({"type": "button", "action_id": f"cmd:{i}",
                             "text": plain(choice.label, BUTTON_TEXT_MAX), "value": choice.value})
        blocks.append({"type": "actions", "block_id": f"{block_prefix}:{n}", "elements": elements})
    return blocks


def step_controls(step: FormStep, labels: Mapping[str, str]) -> list[Block]:
    """The answer controls of one form step (buttons, a select or a date picker) and
    Skip / Back / Cancel."""
    version = step.version
    field = step.field
    blocks: list[Block] = []
    if field.kind == "choice" and field.choices:
        choices = list(field.choices)
        if len(choices) <= BUTTONS_PER_STEP:
            elements = [{"type": "button", "action_id": f"form:answer:{i}",
                         "text": plain(c.label, BUTTON_TEXT_MAX), "value": c.value[:BUTTON_VALUE_MAX]}
                        for i, c in enumerate(choices)]
            blocks.append({"type": "actions", "block_id": f"form:{version}:answers",
                           "elements": elements})
        elif len(choices) <= OPTIONS_MAX:
            blocks.append({"type": "actions", "block_id": f"form:{version}:answers",
                           "elements": [{"type": "static_select", "action_id": "form:select",
                                         "placeholder": plain(labels["choose"], 150),
                                         "options": options(choices)}]})
    elif field.kind == "date":
        picker: Block = {"type": "datepicker", "action_id": "form:date"}
        if field.value:
            picker["initial_date"] = field.value
        blocks.append({"type": "actions", "block_id": f"form:{version}:answers",
                       "elements": [picker]})
    controls = []
    if not field.required:
        controls.append(("form:skip", labels["skip"]))
    if step.can_go_back:
        controls.append(("form:back", labels["back"]))
    controls.append(("form:cancel", labels["cancel"]))
    blocks.append({"type": "actions", "block_id": f"form:{version}:controls",
                   "elements": [{"type": "button", "action_id": action,
                                 "text": plain(label, BUTTON_TEXT_MAX), "value": str(version)}
                                for action, label in controls]})
    return blocks


def message_blocks(text: str, *, choices: Sequence[Choice] = (), step: FormStep | None = None,
                   labels: Mapping[str, str] | None = None) -> list[list[Block]]:
    """The blocks of one reply, cut into messages of at most 50 blocks (usually one)."""
    blocks = (report(text) if step is None and not choices else None) or sections(text)
    if step is not None:
        blocks += step_controls(step, labels or {})
    elif choices:
        blocks += command_buttons(choices)
    return [list(group) for group in _chunks(blocks, MESSAGE_BLOCKS)]


def without_controls(blocks: Sequence[Block], note: str) -> list[Block]:
    """A pressed message's blocks with its buttons replaced by a note of what was chosen."""
    kept = [b for b in blocks if b.get("type") != "actions"]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]


def option_value(choice: Choice, index: int, indexed: bool) -> str:
    return str(index + 1) if indexed else choice.value


def options(choices: Sequence[Choice]) -> list[dict[str, Any]]:
    indexed = needs_index(choices)
    return [{"text": plain(c.label, BUTTON_TEXT_MAX), "value": option_value(c, i, indexed)}
            for i, c in enumerate(choices[:OPTIONS_MAX])]


def needs_index(choices: Sequence[Choice]) -> bool:
    """Whether options must carry their number (1, 2, ...) because a value is too long."""
    return any(len(c.value) > OPTION_VALUE_MAX for c in choices)


def _input_element(field: FieldView) -> dict[str, Any]:
    if field.kind == "choice" and 0 < len(field.choices) <= OPTIONS_MAX:
        element: dict[str, Any] = {"type": "static_select", "options": options(field.choices)}
        indexed = needs_index(field.choices)
        for i, c in enumerate(field.choices):
            if field.value and c.value == field.value:
                element["initial_option"] = {"text": plain(c.label, BUTTON_TEXT_MAX),
                                             "value": option_value(c, i, indexed)}
        return element
    if field.kind == "date":
        element = {"type": "datepicker"}
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", field.value):
            element["initial_date"] = field.value
        return element
    if field.kind == "url":
        element = {"type": "url_text_input"}
    elif field.kind == "email":
        element = {"type": "email_text_input"}
    else:
        element = {"type": "plain_text_input", "multiline": field.kind == "multiline",
                   "max_length": max(1, min(field.max_length, INPUT_MAX))}
    if field.value:
        element["initial_value"] = field.value
    return element


def modal(form: FormView, labels: Mapping[str, str]) -> dict[str, Any]:
    """A modal holding every field of `form`; its callback id names the form."""
    blocks: list[Block] = []
    indexed = []
    for field in form.fields:
        if field.kind == "files":
            continue  # files come as DM attachments; a modal cannot carry a platform file id
        element = {**_input_element(field), "action_id": VALUE_ACTION}
        if element["type"] == "static_select" and needs_index(field.choices):
            indexed.append(field.name)
        block: Block = {"type": "input", "block_id": field.name[:255], "label": plain(field.label),
                        "optional": not field.required, "element": element}
        if field.hint:
            block["hint"] = plain(field.hint)
        blocks.append(block)
    if len(blocks) > SURFACE_BLOCKS:
        raise ValueError(f"form {form.form} has more than {SURFACE_BLOCKS} fields")
    metadata = json.dumps({"v": form.version, "i": indexed}, separators=(",", ":"))
    if len(metadata) > METADATA_MAX:
        raise ValueError("modal private_metadata too long")
    return {
        "type": "modal",
        "callback_id": f"form:{form.form}",
        "title": plain(form.title, TITLE_MAX),
        "submit": plain(form.submit_label, TITLE_MAX),
        "close": plain(labels["cancel"], TITLE_MAX),
        "notify_on_close": True,
        "private_metadata": metadata,
        "blocks": blocks,
    }


def field_errors(errors: Mapping[str, str], block_ids: Sequence[str]) -> dict[str, str]:
    """Errors keyed by the modal's input blocks; one naming no block goes on the first.

    Slack refuses a whole `response_action: errors` that names an unknown block, which
    would leave the person with a modal that silently does nothing.
    """
    known = [b for b in block_ids if b]
    placed: dict[str, str] = {}
    for name, text in errors.items():
        target = name if name in known or not known else known[0]
        placed[target] = f"{placed[target]} {text}" if target in placed else text
    return placed


def submitted_values(view: Mapping[str, Any]) -> dict[str, str]:
    """`{field: value}` from a submitted modal's state; an empty input gives ""."""
    values: dict[str, str] = {}
    for block_id, actions in view.get("state", {}).get("values", {}).items():
        state: Mapping[str, Any] = actions.get(VALUE_ACTION) or next(iter(actions.values()), {})
        values[block_id] = action_value(state)
    return values


def action_value(state: Mapping[str, Any]) -> str:
    """The value an input or a control holds, whatever its element type."""
    if state.get("selected_option"):
        return str(state["selected_option"].get("value", ""))
    for key in ("selected_date", "value"):
        if state.get(key):
            return str(state[key])
    return ""


def home_view(text: str, choices: Sequence[Choice] = ()) -> dict[str, Any]:
    """The App Home tab."""
    blocks = sections(text) + (command_buttons(choices, "home") if choices else [])
    return {"type": "home", "blocks": blocks[:SURFACE_BLOCKS]}
