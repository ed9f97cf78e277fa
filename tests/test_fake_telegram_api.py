"""The fake Telegram Bot API works with the real python-telegram-bot Application and Bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from tests.fakes import validate
from tests.fakes.telegram_api import FakeBotAPI

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    """Run a fake Bot API server for one test."""
    async with FakeBotAPI() as server:
        yield server


def build_app(fake: FakeBotAPI) -> Application:
    """A real PTB Application pointed at the fake."""
    return (ApplicationBuilder().token(fake.token).base_url(f"{fake.url}/bot")
            .base_file_url(f"{fake.url}/file/bot").build())


def make_bot(fake: FakeBotAPI, token: str | None = None) -> Bot:
    """A real PTB Bot pointed at the fake."""
    return Bot(token or fake.token, base_url=f"{fake.url}/bot",
               base_file_url=f"{fake.url}/file/bot")


async def test_polling_start_command_gets_reply_and_offsets_are_confirmed(
        fake: FakeBotAPI) -> None:
    handled: list[int] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        handled.append(update.update_id)
        await update.effective_chat.send_message(f"hello {update.effective_user.first_name}")

    async def run_until_replies(expected: int, push_text: str) -> None:
        app = build_app(fake)
        app.add_handler(CommandHandler("start", start))
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0.0, timeout=1)
            fake.push_update(fake.message_update(42, push_text))
            await fake.wait_for("sendMessage", count=expected)
            await app.updater.stop()
            await app.stop()

    await run_until_replies(1, "/start")
    [reply] = fake.calls_to("sendMessage")
    assert reply.params["chat_id"] == 42
    assert reply.params["text"] == "hello Alice"
    assert reply.result["from"]["username"] == "fpbot_test_bot"
    methods = [c.method for c in fake.calls]
    assert methods[:3] == ["getMe", "deleteWebhook", "getUpdates"]
    assert handled == [1]
    assert fake.pending_updates() == []
    assert fake.confirmed_offset == 2

    # A "process restart" must not see update 1 again; only the new update 2.
    await run_until_replies(2, "/start again")
    assert handled == [1, 2]
    assert fake.pending_updates() == [] and fake.confirmed_offset == 3


async def test_callback_query_and_edit_round_trip(fake: FakeBotAPI) -> None:
    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer("ok")
        await update.callback_query.edit_message_text(f"chose {update.callback_query.data}")

    async with make_bot(fake) as bot:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="pick:a")]])
        sent = await bot.send_message(7, "choose", reply_markup=keyboard)
    [call] = fake.calls_to("sendMessage")
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "A", "callback_data": "pick:a"}]]}
    assert sent.reply_markup == keyboard and sent.from_user.id == 999

    app = build_app(fake)
    app.add_handler(CallbackQueryHandler(on_button))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0.0, timeout=1)
        fake.push_update(fake.callback_update(7, "pick:a", sent.message_id))
        [edit] = await fake.wait_for("editMessageText")
        await app.updater.stop()
        await app.stop()
    assert fake.calls_to("answerCallbackQuery")[0].params["text"] == "ok"
    assert edit.params == {"chat_id": 7, "message_id": sent.message_id, "text": "chose pick:a"}
    assert fake.messages[(7, sent.message_id)]["text"] == "chose pick:a"


async def test_fail_next_429_raises_retry_after(fake: FakeBotAPI,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB >= 22.2 warns (PTBDeprecationWarning) whenever RetryAfter.retry_after is read as an
    # int, even inside RetryAfter.__init__; opting into timedelta values avoids the warning.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    fake.fail_next("sendMessage", 429, retry_after=1)
    async with make_bot(fake) as bot:
        with pytest.raises(RetryAfter) as exc_info:
            await bot.send_message(42, "first")
        await bot.send_message(42, "second")  # only the next call fails
    assert exc_info.value.retry_after == dtm.timedelta(seconds=1)
    assert [(c.status, c.params["text"]) for c in fake.calls_to("sendMessage")] == [
        (429, "first"), (200, "second")]


async def test_fail_next_500_raises_network_error(fake: FakeBotAPI) -> None:
    fake.fail_next("sendMessage", 500, times=2)
    async with make_bot(fake) as bot:
        for _ in range(2):
            with pytest.raises(NetworkError, match="Internal Server Error"):
                await bot.send_message(42, "x")
    assert [c.status for c in fake.calls_to("sendMessage")] == [500, 500]


async def test_send_document_records_upload_and_get_file_serves_it(fake: FakeBotAPI) -> None:
    async with make_bot(fake) as bot:
        msg = await bot.send_document(42, InputFile(b"a,b\n1,2\n", filename="report.csv"),
                                      caption="weekly")
        again = await (await bot.get_file(msg.document.file_id)).download_as_bytearray()
    [call] = fake.calls_to("sendDocument")
    assert call.params["document"] == {"filename": "report.csv", "content": b"a,b\n1,2\n"}
    assert call.params["caption"] == "weekly"
    assert msg.document.file_name == "report.csv" and msg.document.file_size == 8
    assert bytes(again) == b"a,b\n1,2\n"


async def test_get_file_downloads_registered_content(fake: FakeBotAPI) -> None:
    doc = fake.add_file("FILE1", b"%PDF-1.4 fake", file_name="brief.pdf")
    assert doc["mime_type"] == "application/pdf"
    async with make_bot(fake) as bot:
        tg_file = await bot.get_file("FILE1")
        data = await tg_file.download_as_bytearray()
    assert tg_file.file_size == len(b"%PDF-1.4 fake")
    assert tg_file.file_path.startswith(f"{fake.url}/file/bot{fake.token}/")
    assert bytes(data) == b"%PDF-1.4 fake"
    # A document update built from add_file() parses as a real Message with a Document.
    update = Update.de_json(fake.push_update(fake.message_update(5, "see", document=doc)), None)
    assert update.message.document.file_id == "FILE1" and update.message.caption == "see"


async def test_wrong_token_is_rejected(fake: FakeBotAPI) -> None:
    with pytest.raises(InvalidToken):
        async with make_bot(fake, token="123:wrong"):
            pass
    assert [(c.method, c.status) for c in fake.calls] == [("getMe", 401)]


async def test_webhook_blocks_get_updates_with_conflict(fake: FakeBotAPI) -> None:
    async with make_bot(fake) as bot:
        await bot.set_webhook("https://example.org/tg", secret_token="s3cret")
        info = await bot.get_webhook_info()
        with pytest.raises(Conflict):
            await bot.get_updates(timeout=0)
        await bot.delete_webhook()
        assert await bot.get_updates(timeout=0) == ()
    assert info.url == "https://example.org/tg"
    assert fake.webhook_url == "" and fake.calls_to("setWebhook")[0].params["secret_token"] == (
        "s3cret")


async def test_get_updates_honours_offset_limit_and_wakes_long_poll(fake: FakeBotAPI) -> None:
    for text in ("a", "b", "c"):
        fake.push_update(fake.message_update(1, text))
    async with make_bot(fake) as bot:
        first = await bot.get_updates(limit=2, timeout=0)
        assert [u.update_id for u in first] == [1, 2]
        rest = await bot.get_updates(offset=3, timeout=0)
        assert [u.message.text for u in rest] == ["c"]
        assert [u["update_id"] for u in fake.pending_updates()] == [3]
        assert fake.confirmed_offset == 3

        # A 10 s long-poll returns as soon as an update is pushed (here 0.2 s after it began).
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, fake.push_update, {"message": fake.message_update(1, "/help")[
            "message"]})
        got = await asyncio.wait_for(bot.get_updates(offset=4, timeout=10), 2)
    assert [u.message.text for u in got] == ["/help"]
    assert got[0].message.entities[0].type == "bot_command"


async def test_commands_and_catch_all(fake: FakeBotAPI) -> None:
    async with make_bot(fake) as bot:
        await bot.set_my_commands([("start", "Start"), ("help", "Help")])
        commands = await bot.get_my_commands()
        await bot.delete_my_commands()
        assert await bot.get_my_commands() == ()
        assert await bot.send_chat_action(42, "typing") is True
        assert await bot.delete_message(42, 1) is True
        assert await bot.set_chat_menu_button(42) is True
        assert await bot.do_api_request("someFutureMethod", {"x": 1}) is True
    assert [(c.command, c.description) for c in commands] == [("start", "Start"),
                                                               ("help", "Help")]
    assert fake.calls_to("someFutureMethod")[0].params == {"x": 1}
    assert fake.calls_to("setmycommands")[0].params["commands"][0] == {
        "command": "start", "description": "Start"}


async def test_wait_for_timeout_lists_recorded_methods(fake: FakeBotAPI) -> None:
    async with make_bot(fake):
        pass
    with pytest.raises(TimeoutError, match=r"1 sendMessage call\(s\).*recorded: getMe"):
        await fake.wait_for("sendMessage", timeout=0.05)


# ---- the Bot API's own checks (TDLib's HTML parser, the documented limits) ------------------
async def test_html_telegram_cannot_parse_is_refused_with_its_error(fake: FakeBotAPI) -> None:
    async with make_bot(fake) as bot:
        with pytest.raises(BadRequest, match="Can't parse entities: can't find end tag"):
            await bot.send_message(42, "<b>Berlin, 9 April", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match='unsupported start tag "br"'):
            await bot.send_message(42, "Berlin<br>9 April", parse_mode=ParseMode.HTML)
        await bot.send_message(42, "<b>Berlin</b> &amp; <i>Windhoek</i> &#x27;18",
                               parse_mode=ParseMode.HTML)
    refusals = validate.take_refusals()
    assert [r.error for r in refusals] == [
        'Bad Request: can\'t parse entities: Can\'t find end tag corresponding to start tag "b"',
        'Bad Request: can\'t parse entities: Unsupported start tag "br" at byte offset 6']
    assert [c.status for c in fake.calls_to("sendMessage")] == [400, 400, 200]


async def test_text_length_counts_after_parsing(fake: FakeBotAPI) -> None:
    async with make_bot(fake) as bot:
        await bot.send_message(42, f"<b>{'a' * 4096}</b>", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(42, "a" * 4097)
        with pytest.raises(BadRequest, match="Text must be non-empty"):
            await bot.send_message(42, "<b> </b>", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match="Message caption is too long"):
            await bot.send_document(42, b"x", filename="a.txt", caption="c" * 1025)
    assert len(validate.take_refusals()) == 3


async def test_buttons_and_commands_keep_the_bot_api_limits(fake: FakeBotAPI) -> None:
    async with make_bot(fake) as bot:
        with pytest.raises(BadRequest, match="Button_data_invalid"):
            await bot.send_message(42, "Pick", reply_markup=InlineKeyboardMarkup(
                [[InlineKeyboardButton("Berlin", callback_data="b" * 65)]]))
        with pytest.raises(BadRequest, match="Bot_command_invalid"):
            await bot.set_my_commands([BotCommand("Register-Now", "Register for a meeting")])
        with pytest.raises(BadRequest, match="Command description must be non-empty"):
            await bot.set_my_commands([BotCommand("register", " ")])
        await bot.send_message(42, "Pick", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("Berlin", callback_data="b" * 64)]]))
        await bot.set_my_commands([BotCommand("register", "Register for a meeting")])
    assert [r.error for r in validate.take_refusals()] == [
        "Bad Request: BUTTON_DATA_INVALID", "Bad Request: BOT_COMMAND_INVALID",
        "Bad Request: command description must be non-empty"]
