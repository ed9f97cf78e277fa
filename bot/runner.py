"""`fpbot run` (polling and Socket Mode, one process) and `fpbot serve` (webhooks, any number)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot import preview
from bot.adapters import PlatformAdapter
from bot.app import BotApp

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running(app: BotApp, adapters: Sequence[PlatformAdapter], *, webhook: bool,
                  scheduler: bool = True) -> AsyncIterator[None]:
    """Adapters started and registered with the outbox, the outbox swept, the scheduler on."""
    started: list[PlatformAdapter] = []
    sweeper: asyncio.Task[None] | None = None
    redrains: list[asyncio.Task[None]] = []
    app.outbox.stopping.clear()
    try:
        for adapter in adapters:
            app.outbox.senders[adapter.platform] = adapter
            await adapter.start(webhook=webhook)
            started.append(adapter)
            log.info("%s adapter started (%s)", adapter.platform,
                     "webhook" if webhook else "polling")
        if scheduler:
            app.start_scheduler()
        sweeper = asyncio.create_task(app.outbox.run(), name="outbox")
        for adapter in started:
            drain = getattr(adapter, "drain", None)
            if drain is not None:
                redrains.append(asyncio.create_task(_redrain(adapter.platform, drain),
                                                    name=f"{adapter.platform}-redrain"))
        yield
    finally:
        if sweeper is not None:  # let the message being sent go out, then stop
            app.outbox.stop()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(sweeper), timeout=STOP_GRACE)
        for task in [t for t in (sweeper, *redrains) if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for adapter in reversed(started):
            await adapter.stop()
            app.outbox.senders.pop(adapter.platform, None)


STOP_GRACE = 15.0  # seconds a stopping process gives the message it is sending
REDRAIN_EVERY = 60.0  # seconds between retries of requests the store could not take


async def _redrain(platform: str, drain: Callable[[], Awaitable[int]]) -> None:
    """Retry, now and then, inbox items left unanswered (a store outage, a failed send)."""
    while True:
        await asyncio.sleep(REDRAIN_EVERY)
        try:
            await drain()
        except Exception:
            log.exception("%s: retrying unanswered requests failed", platform)


async def run_until_signalled(app: BotApp, adapters: Sequence[PlatformAdapter]) -> None:
    """`fpbot run`: poll every platform until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with running(app, adapters, webhook=False):
        names = ", ".join(a.platform for a in adapters)
        log.info("Focal Points Bot is running (%s); Ctrl-C stops it", names)
        await stop.wait()


def web_app(app: BotApp, adapters: Sequence[PlatformAdapter]) -> Starlette:
    """The ASGI app of `fpbot serve`: each adapter's endpoints plus /healthz."""

    async def health(request: Request) -> JSONResponse:
        try:
            await app.db.check()
        except Exception:
            return JSONResponse({"ok": False, "store": "unavailable"}, status_code=503)
        return JSONResponse({"ok": True, "platforms": [a.platform for a in adapters]})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with running(app, adapters, webhook=True):
            yield

    routes: list[BaseRoute] = [Route("/healthz", health, methods=["GET"]), *preview.routes(app)]
    for adapter in adapters:
        routes.extend(adapter.routes())
    return Starlette(routes=routes, lifespan=lifespan)


async def serve(app: BotApp, adapters: Sequence[PlatformAdapter], host: str, port: int) -> None:
    """`fpbot serve`: the webhook endpoints under uvicorn."""
    config = uvicorn.Config(web_app(app, adapters), host=host, port=port, log_config=None,
                            lifespan="on")
    await uvicorn.Server(config).serve()
