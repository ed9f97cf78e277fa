"""The Telegram adapter's pure translations: updates to `Incoming`, replies to keyboards and text."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Update

from bot.adapters.telegram import (
    CALLBACK_LIMIT,
    addressed_to_bot,
    file_url,
    keyboard,
    split_message,
    text_length,
    update_to_incoming,
    webhook_url,
)
from handlers.types import Attachment, Choice, FieldView, FormStep, Outgoing
from messages import escape_html

BOT = "fpbot_test_bot"
LABELS = {"back": "Back", "skip": "Skip", "cancel": "Cancel"}


def message(text: str | None = None, *, chat_id: int = 42, chat_type: str = "private",
            user_id: int = 42, **extra: Any) -> Update:
    chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
    msg: dict[str, Any] = {"message_id": 5, "date": 1_520_000_000, "chat": chat,
                           "from": {"id": user_id, "is_bot": False, "first_name": "Ana",
                                    "last_name": "Pérez", "language_code": "es-CL"}, **extra}
    if text is not None:
        msg["text"] = text
    return Update.de_json({"update_id": 1, "message": msg}, None)


def press(data: str, *, chat_type: str = "private") -> Update:
    return Update.de_json({"update_id": 2, "callback_query": {
        "id": "q1", "data": data, "chat_instance": "c",
        "from": {"id": 42, "is_bot": False, "first_name": "Ana"},
        "message": {"message_id": 9, "date": 1_520_000_000,
                    "chat": {"id": 42 if chat_type == "private" else -100, "type": chat_type},
                    "text": "question"}}}, None)


def test_private_text_becomes_incoming() -> None:
    inc = update_to_incoming(message("/start ABCD-EFGH"), BOT)
    assert inc is not None
    assert (inc.platform, inc.user_id, inc.chat_id, inc.private) == ("telegram", "42", "42", True)
    assert inc.command == "start" and inc.args == "ABCD-EFGH"
    assert inc.display_name == "Ana Pérez" and inc.locale == "es"


def test_group_only_commands_for_this_bot() -> None:
    group = {"chat_id": -100, "chat_type": "supergroup"}
    assert update_to_incoming(message("hello everyone", **group), BOT) is None
    assert update_to_incoming(message("/help@other_bot", **group), BOT) is None
    for text in ("/help", "/help@FPBOT_test_bot", "/troika@fpbot_test_bot 2018"):
        inc = update_to_incoming(message(text, **group), BOT)
        assert inc is not None and inc.private is False and inc.chat_id == "-100", text
    assert addressed_to_bot("/x", BOT) and not addressed_to_bot("/", BOT)


def test_document_and_largest_photo_are_attachments() -> None:
    doc = {"file_id": "F1", "file_unique_id": "u1", "file_name": "brief.pdf",
           "file_size": 1234, "mime_type": "application/pdf"}
    inc = update_to_incoming(message(document=doc, caption="my update"), BOT)
    assert inc is not None and inc.text == "my update"
    assert inc.attachments == (Attachment("F1", "brief.pdf", 1234, "application/pdf"),)

    sizes = [{"file_id": f"P{n}", "file_unique_id": f"p{n}", "width": w, "height": w,
              "file_size": w * 10} for n, w in enumerate((90, 800, 320))]
    inc = update_to_incoming(message(photo=sizes), BOT)
    assert inc is not None and inc.text == ""
    [photo] = inc.attachments
    assert (photo.file_id, photo.size, photo.mime_type) == ("P1", 8000, "image/jpeg")


def test_buttons_become_answers_and_commands() -> None:
    inc = update_to_incoming(press("v|3|red"), BOT)
    assert inc is not None
    assert (inc.action, inc.value, inc.form_version) == ("answer", "red", 3)
    inc = update_to_incoming(press("n|3|2"), BOT)
    assert inc is not None and (inc.action, inc.value) == ("answer", "2")
    for data, action in (("b|4", "back"), ("x|4", "cancel"), ("s|4", "skip")):
        inc = update_to_incoming(press(data), BOT)
        assert inc is not None and (inc.action, inc.form_version) == (action, 4)
    inc = update_to_incoming(press("t|/requests approve 12", chat_type="group"), BOT)
    assert inc is not None and inc.text == "/requests approve 12" and inc.command == "requests"
    assert inc.private is False and inc.chat_id == "-100"
    for junk in ("", "zz", "v|x|1", "t|not a command"):
        assert update_to_incoming(press(junk), BOT) is None


def step(version: int = 7, required: bool = True, back: bool = True) -> FormStep:
    view = FieldView("colour", "Which colour?", "choice", required, 200)
    return FormStep("survey", "Survey", view, 2, 3, back, version)


def test_step_keyboard_fits_callback_limit_and_has_controls() -> None:
    long_value = "Ministry of Foreign Affairs and International Cooperation of a Long Name"
    out = Outgoing("forms.question", choices=(Choice("red", "Red"), Choice(long_value, "Long")),
                   step=step(required=False))
    markup = keyboard(out, LABELS)
    assert markup is not None
    rows = [[(b.text, b.callback_data) for b in row] for row in markup.inline_keyboard]
    assert rows == [[("Red", "v|7|red")], [("Long", "n|7|2")],
                    [("Back", "b|7"), ("Skip", "s|7"), ("Cancel", "x|7")]]
    assert all(len(str(b.callback_data).encode()) <= CALLBACK_LIMIT
               for row in markup.inline_keyboard for b in row)
    first = keyboard(Outgoing("forms.question", step=step(back=False)), LABELS)
    assert first is not None
    assert [b.text for b in first.inline_keyboard[-1]] == ["Cancel"]


def test_command_buttons_pairwise_and_too_long_fails_loudly() -> None:
    out = Outgoing("x", choices=(Choice("/requests approve 1", "Approve"),
                                 Choice("/requests reject 1", "Reject"),
                                 Choice("/help", "Help")))
    markup = keyboard(out, LABELS)
    assert markup is not None
    assert [[b.callback_data for b in row] for row in markup.inline_keyboard] == [
        ["t|/requests approve 1", "t|/requests reject 1"], ["t|/help"]]
    assert keyboard(Outgoing("x"), LABELS) is None
    with pytest.raises(ValueError, match="64"):
        keyboard(Outgoing("x", choices=(Choice("/" + "x" * 70, "Too long"),)), LABELS)


def test_split_message_cuts_at_line_ends_within_the_limit() -> None:
    lines = [f"<b>#{n}</b> request from Ana &amp; co" for n in range(400)]
    html_text = "\n".join(lines)
    chunks = split_message(html_text, "unused")
    assert len(chunks) > 1 and all(text_length(c) <= 4096 for c in chunks)
    assert "\n".join(chunks) == html_text  # nothing lost, every cut at a line end


def test_split_message_falls_back_to_plain_for_a_giant_line() -> None:
    plain = "<&>" * 3000 + "\nend"
    chunks = split_message(escape_html(plain), plain)
    assert len(chunks) > 1 and all(text_length(c) <= 4096 for c in chunks)
    joined = "".join(chunks).replace("\n", "")
    assert joined == escape_html(plain.replace("\n", ""))  # no entity cut in half
    # A tag spanning a cut is never sent broken: the plain rendering goes instead.
    tagged = "<b>" + "\n".join(["x" * 100] * 60) + "</b>"
    chunks = split_message(tagged, "\n".join(["x" * 100] * 60))
    assert all("<b>" not in c for c in chunks)


def test_emoji_count_twice_towards_the_limit() -> None:
    assert text_length("👋") == 2
    chunks = split_message("\n".join(["👋" * 1500] * 3), "unused")
    assert len(chunks) == 3


def test_urls() -> None:
    assert file_url("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert file_url("http://127.0.0.1:8081/bot/") == "http://127.0.0.1:8081/file/bot"
    assert webhook_url("https://bot.example.org") == "https://bot.example.org/telegram/webhook"
    assert webhook_url("https://bot.example.org/custom/hook") == (
        "https://bot.example.org/custom/hook")
