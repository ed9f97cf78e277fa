"""The platforms' own checks on what the bot sends, for the fake Bot API and the fake Slack API.

Telegram: every text or caption sent with a parse mode goes through TDLib's own entity parser
(PyPI `tdjson`: `parseTextEntities` is what the Bot API server runs on `parse_mode=HTML`), then
the Bot API's limits: text 1-4096 characters after parsing, captions up to 1024, callback data
1-64 bytes, commands `[a-z0-9_]{1,32}` with 1-256 character descriptions. The error texts are
the Bot API server's (tdlib/telegram-bot-api `Client.cpp`, tdlib/td `MessageContent.cpp`,
`ReplyMarkup.cpp`, `BotCommand.cpp`): "Bad Request: can't parse entities: ...".

Slack: every block and view is parsed with slack_sdk's Block Kit models, each model in it is
validated (`validate_json`), and it must survive the round trip unchanged (an unknown or empty
field does not). Plus what slack_sdk leaves to the server: 50 blocks per message, 100 per view,
no message without text or blocks, 40,000 characters of text. A message is refused with
`invalid_blocks`, a view with `invalid_arguments`, as Slack does.

Each refusal is also kept in `refused`; `tests/conftest.py` fails the test that caused it
unless the test takes it with `take_refusals()` (a test that sends a bad payload on purpose).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models import JsonObject
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

Json = dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    """A payload a fake refused, and the platform's answer."""

    platform: str
    method: str
    error: str


refused: list[Refusal] = []


def take_refusals() -> list[Refusal]:
    """The refusals so far, forgotten: for a test that sends a bad payload on purpose."""
    taken = list(refused)
    refused.clear()
    return taken


# -- Telegram -------------------------------------------------------------------------------
TEXT_MAX = 4096
CAPTION_MAX = 1024
CALLBACK_DATA_MAX = 64
COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
COMMANDS_MAX = 100
DESCRIPTION_MAX = 256
_PARSE_MODES: dict[str, Json] = {
    "html": {"@type": "textParseModeHTML"},
    "markdownv2": {"@type": "textParseModeMarkdown", "version": 2},
    "markdown": {"@type": "textParseModeMarkdown", "version": 1},
}
_td_lock = threading.Lock()
_td_ready = False


def _td(query: Json) -> Json:
    """One synchronous TDLib request (no client, no network, no files)."""
    global _td_ready
    import tdjson

    with _td_lock:
        if not _td_ready:  # else TDLib logs every request to stderr
            tdjson.td_execute(json.dumps({"@type": "setLogVerbosityLevel",
                                          "new_verbosity_level": 0}).encode())
            _td_ready = True
        answer: Json = json.loads(tdjson.td_execute(json.dumps(query).encode()))
    return answer


def _bot_api_error(message: str) -> str:
    """A TDLib error as the Bot API server words it (`Client::fail_query_with_error`)."""
    if len(message) >= 2 and (message[1] == "_" or message[1].isupper()):
        return f"Bad Request: {message}"
    return f"Bad Request: {message[:1].lower()}{message[1:]}"


def parse_entities(text: str, parse_mode: str | None) -> tuple[str, list[Json]]:
    """(text, entities) as Telegram stores a message; ValueError(the Bot API's error) if not."""
    mode = _PARSE_MODES.get((parse_mode or "").lower())
    if not text or mode is None:
        if parse_mode and (parse_mode or "").lower() not in ("", "none", *_PARSE_MODES):
            raise ValueError("Bad Request: unsupported parse_mode")
        return text, []
    answer = _td({"@type": "parseTextEntities", "text": text, "parse_mode": mode})
    if answer.get("@type") == "error":
        raise ValueError(_bot_api_error(str(answer.get("message", ""))))
    return str(answer["text"]), list(answer.get("entities", []))


def _text_error(params: Json, key: str) -> str | None:
    raw = params.get(key)
    if key == "text" and not raw:
        return "Bad Request: message text is empty"
    if raw is None:
        return None
    try:
        text, _ = parse_entities(str(raw), params.get("parse_mode"))
    except ValueError as exc:
        return str(exc)
    length = len(text.rstrip())  # TDLib counts characters (utf8_length) of the trimmed text
    if key == "text" and not text.strip():
        return "Bad Request: text must be non-empty"
    if key == "text" and length > TEXT_MAX:
        return "Bad Request: message is too long"
    if key == "caption" and length > CAPTION_MAX:
        return "Bad Request: message caption is too long"
    return None


def _keyboard_error(markup: Any) -> str | None:
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        return ('Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an '
                "Array of Arrays")
    buttons = [b for row in rows for b in row]
    kinds = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
             "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
             "copy_text", "callback_game", "pay")
    for button in buttons:
        if not isinstance(button, dict) or not isinstance(button.get("text"), str):
            return "Bad Request: can't parse inline keyboard button: Field \"text\" must be of type String"
        if not any(button.get(k) for k in kinds):
            return ("Bad Request: can't parse inline keyboard button: Text buttons are "
                    "unallowed in the inline keyboard")
    for button in buttons:
        if not button["text"].strip():
            return "Bad Request: inline keyboard button text must be non-empty"
    for button in buttons:
        data = button.get("callback_data")
        if isinstance(data, str) and len(data.encode()) > CALLBACK_DATA_MAX:
            return "Bad Request: BUTTON_DATA_INVALID"
    return None


def _commands_error(commands: Any) -> str | None:
    if not isinstance(commands, list):
        return "Bad Request: can't parse commands JSON object"
    for command in commands:
        name = str(command.get("command", "")).strip().removeprefix("/")
        description = str(command.get("description", "")).strip()
        if not name:
            return "Bad Request: command must be non-empty"
        if len(name) > 32:
            return "Bad Request: command length must not exceed 32"
        if not description:
            return "Bad Request: command description must be non-empty"
        if len(description) > DESCRIPTION_MAX:
            return f"Bad Request: command description length must not exceed {DESCRIPTION_MAX}"
    if len(commands) > COMMANDS_MAX:
        return "Bad Request: BOT_COMMANDS_TOO_MUCH"
    if not all(COMMAND.match(str(c["command"]).strip().removeprefix("/")) for c in commands):
        return "Bad Request: BOT_COMMAND_INVALID"
    return None


def telegram_error(method: str, params: Json) -> str | None:
    """The Bot API's 400 description for a payload it refuses; None when it is accepted."""
    error = telegram_check(method, params)
    if error is not None:
        refused.append(Refusal("telegram", method, error))
    return error


def telegram_check(method: str, params: Json) -> str | None:
    """`telegram_error` without keeping the refusal."""
    name = method.lower()
    error = None
    if name in ("sendmessage", "editmessagetext"):
        error = _text_error(params, "text")
    elif name.startswith("send") or name == "editmessagecaption":
        error = _text_error(params, "caption")
    if error is None and "reply_markup" in params:
        error = _keyboard_error(params["reply_markup"])
    if error is None and name == "setmycommands":
        error = _commands_error(params.get("commands"))
    return error


# -- Slack ----------------------------------------------------------------------------------
MESSAGE_BLOCKS_MAX = 50
VIEW_BLOCKS_MAX = 100
MESSAGE_TEXT_MAX = 40_000
_BLOCK_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral",
                            "chat.scheduleMessage"})
_VIEW_METHODS = frozenset({"views.open", "views.update", "views.push", "views.publish"})


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


def _validate_models(obj: Any) -> None:
    """`validate_json` on the object and on every model inside it (slack_sdk checks only the
    outer one when serialising some elements, such as the options of a select)."""
    if isinstance(obj, JsonObject):
        obj.validate_json()
        for value in vars(obj).values():
            _validate_models(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _validate_models(value)


def _difference(sent: Any, kept: Any, pointer: str) -> str | None:
    """Where the payload and slack_sdk's reading of it part (an unknown or empty field)."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key in sorted(set(sent) | set(kept)):
            if key not in kept:
                return f"{pointer}/{key}"
            if key not in sent:
                continue  # a default slack_sdk fills in
            found = _difference(sent[key], kept[key], f"{pointer}/{key}")
            if found:
                return found
        return None
    if isinstance(sent, list) and isinstance(kept, list):
        if len(sent) != len(kept):
            return pointer
        for n, (a, b) in enumerate(zip(sent, kept, strict=True)):
            found = _difference(a, b, f"{pointer}/{n}")
            if found:
                return found
        return None
    return None if sent == kept else pointer


def block_errors(blocks: Any, pointer: str = "/blocks") -> list[str]:
    """Slack's complaints about a list of blocks, worded like its `response_metadata`."""
    if not isinstance(blocks, list):
        return [f"[ERROR] must be an array [json-pointer:{pointer}]"]
    errors: list[str] = []
    for n, raw in enumerate(blocks):
        where = f"{pointer}/{n}"
        if not isinstance(raw, dict):
            errors.append(f"[ERROR] must be an object [json-pointer:{where}]")
            continue
        try:
            block = Block.parse(raw)
            if block is None or type(block) is Block:
                errors.append(f"[ERROR] unsupported type {raw.get('type')!r} [json-pointer:{where}]")
                continue
            _validate_models(block)
            kept = block.to_dict()
        except (SlackObjectFormationError, TypeError, ValueError, KeyError) as exc:
            errors.append(f"[ERROR] {exc} [json-pointer:{where}]")
            continue
        moved = _difference(raw, kept, where)
        if moved:
            errors.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{moved}]")
    return errors


def view_errors(view: Any) -> list[str]:
    if not isinstance(view, dict):
        return ["[ERROR] must be an object [json-pointer:/view]"]
    errors = block_errors(view.get("blocks", []), "/view/blocks")
    if errors:
        return errors
    if len(view.get("blocks", [])) > VIEW_BLOCKS_MAX:
        return [f"[ERROR] must be less than {VIEW_BLOCKS_MAX + 1} items "
                "[json-pointer:/view/blocks]"]
    try:
        model = View(**view)
        _validate_models(model)
        kept = model.to_dict()
    except (SlackObjectFormationError, TypeError, ValueError) as exc:
        return [f"[ERROR] {exc} [json-pointer:/view]"]
    moved = _difference(view, kept, "/view")
    return [f"[ERROR] failed to match all allowed schemas [json-pointer:{moved}]"] if moved else []


def metadata_error(metadata: Any) -> str | None:
    """Slack's refusal of a message's `metadata` (docs.slack.dev/messaging/message-metadata):
    an object with an alphanumeric `event_type` and an `event_payload` object whose values
    are strings, numbers, booleans, objects or lists of objects."""
    if not isinstance(metadata, dict) or set(metadata) - {"event_type", "event_payload"}:
        return "invalid_metadata_format"
    kind, payload = metadata.get("event_type"), metadata.get("event_payload")
    if not isinstance(kind, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,255}", kind):
        return "invalid_metadata_schema"
    scalar = (str, int, float, bool)
    if not isinstance(payload, dict) or not all(
            isinstance(v, (*scalar, dict)) or (isinstance(v, list) and all(
                isinstance(x, dict) for x in v)) for v in payload.values()):
        return "invalid_metadata_schema"
    return None


def slack_error(method: str, params: Json) -> Json | None:
    """Slack's `ok: false` answer to a payload it refuses; None when it is accepted."""
    answer: Json | None = None
    if method in _BLOCK_METHODS:
        blocks = _decoded(params.get("blocks"))
        text = params.get("text")
        metadata = params.get("metadata")
        if not text and not blocks:
            answer = {"ok": False, "error": "no_text"}
        elif metadata is not None and (problem := metadata_error(_decoded(metadata))):
            answer = {"ok": False, "error": problem}
        elif text and len(str(text)) > MESSAGE_TEXT_MAX:
            answer = {"ok": False, "error": "msg_too_long"}
        elif blocks:
            errors = block_errors(blocks)
            if not errors and len(blocks) > MESSAGE_BLOCKS_MAX:
                errors = [f"[ERROR] must be less than {MESSAGE_BLOCKS_MAX + 1} items "
                          "[json-pointer:/blocks]"]
            if errors:
                answer = {"ok": False, "error": "invalid_blocks", "errors": errors,
                          "response_metadata": {"messages": errors}}
    elif method in _VIEW_METHODS:
        errors = view_errors(_decoded(params.get("view")))
        if errors:
            answer = {"ok": False, "error": "invalid_arguments",
                      "response_metadata": {"messages": errors}}
    if answer is not None:
        detail = "; ".join(answer.get("response_metadata", {}).get("messages", []))
        refused.append(Refusal("slack", method, f"{answer['error']}: {detail}".rstrip(": ")))
    return answer
