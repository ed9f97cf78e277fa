"""The baseline: a bare python-telegram-bot Application with one echo handler.

    python -m benchmarks.echo_bot --port PORT     # webhook, behind Starlette + uvicorn
    python -m benchmarks.echo_bot --polling       # getUpdates (PTB's Updater)
    python -m benchmarks.echo_bot --port PORT --paced   # replies paced by AIORateLimiter

Reads TELEGRAM_TOKEN, TELEGRAM_API_URL and (webhook) TELEGRAM_WEBHOOK_SECRET like `fpbot`.
Webhook mode follows PTB's customwebhookbot/starlettebot.py example: the route checks the
secret header, puts the update on `Application.update_queue` and answers 200 at once; the
Application replies from its queue. PTB defaults otherwise (one update at a time, no rate
limiter, no persistence): what the least a Telegram bot in Python does costs.

`--paced` adds PTB's AIORateLimiter (30 messages a second overall, its defaults): the least a
bot that keeps to Telegram's limits does. It replies at 30 a second as the project does, and
a process woken 30 times a second spends more per message than one that sends a burst.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import signal
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import AIORateLimiter, Application, ContextTypes, MessageHandler, filters

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Send the message's text back."""
    if update.message is not None and update.message.text:
        await update.message.reply_text(update.message.text)


def build(polling: bool, paced: bool = False) -> Application:  # type: ignore[type-arg]
    builder = (Application.builder().token(os.environ["TELEGRAM_TOKEN"])
               .base_url(os.environ["TELEGRAM_API_URL"]))
    if paced:
        builder = builder.rate_limiter(AIORateLimiter())  # type: ignore[arg-type]
    if not polling:
        builder = builder.updater(None)
    ptb = builder.build()
    ptb.add_handler(MessageHandler(filters.TEXT, echo))
    return ptb


async def run_webhook(port: int, paced: bool = False) -> None:
    ptb = build(polling=False, paced=paced)
    secret = os.environ["TELEGRAM_WEBHOOK_SECRET"]

    async def webhook(request: Request) -> Response:
        """Queue the update for the Application; a wrong secret gets 403."""
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return Response(status_code=403)
        await ptb.update_queue.put(Update.de_json(await request.json(), ptb.bot))
        return Response()

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with ptb:
            await ptb.start()
            yield
            await ptb.stop()

    app = Starlette(routes=[Route("/telegram/webhook", webhook, methods=["POST"]),
                            Route("/healthz", healthz, methods=["GET"])], lifespan=lifespan)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    await uvicorn.Server(config).serve()


async def run_polling() -> None:
    ptb = build(polling=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ptb:
        await ptb.start()
        assert ptb.updater is not None
        await ptb.updater.start_polling()
        await stop.wait()
        await ptb.updater.stop()
        await ptb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--port", type=int, help="serve the webhook on 127.0.0.1:PORT")
    mode.add_argument("--polling", action="store_true", help="poll getUpdates instead")
    parser.add_argument("--paced", action="store_true",
                        help="webhook: pace the replies with PTB's AIORateLimiter")
    args = parser.parse_args()
    asyncio.run(run_polling() if args.polling else run_webhook(args.port, args.paced))


if __name__ == "__main__":
    main()
