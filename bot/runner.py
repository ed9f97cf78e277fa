"""`fpbot run` (polling and Socket Mode, one process) and `fpbot serve` (webhooks, any number)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot import preview
from bot.adapters import PlatformAdapter
from bot.app import BotApp, store_identity

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running(app: BotApp, adapters: Sequence[PlatformAdapter], *, webhook: bool,
                  scheduler: bool = True, settle: bool = False) -> AsyncIterator[None]:
    """This instance alive (heartbeat), its adapters receiving, the inbox drained and the
    sender sending, the scheduler on; on the way out each is stopped in reverse, and the
    instance's row removed so that its leftovers are free for the next start at once.
    `settle` (a process of its own: `fpbot run`, `fpbot serve`): see `settle_memory`."""
    started: list[PlatformAdapter] = []
    tasks: list[asyncio.Task[None]] = []
    app.sender.stopping.clear()
    app.inbound.restart()
    if not app.store_uid:  # a store not opened through `BotApp.open` (tests, scripts)
        app.store_uid = await store_identity(app.db, app.clock.now())
    await app.liveness.start()
    try:
        for adapter in adapters:
            app.sender.channels[adapter.platform] = adapter
            app.inbound.receivers[adapter.platform] = adapter
            await adapter.start(webhook=webhook)
            started.append(adapter)
            log.info("%s adapter started (%s)", adapter.platform,
                     "webhook" if webhook else "polling")
        if scheduler:
            app.start_scheduler()
        tasks.append(asyncio.create_task(app.sender.run(), name="sender"))
        tasks.append(asyncio.create_task(app.inbound.run(), name="inbox-drain"))
        if settle:
            settle_memory()
        yield
    finally:
        for adapter in reversed(started):
            with contextlib.suppress(Exception):
                await adapter.stop_receiving()
        await app.inbound.stop(grace=app.stop_grace)
        await app.sender.stop(grace=app.stop_grace)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for adapter in reversed(started):
            await adapter.stop()
        for adapter in adapters:
            app.sender.channels.pop(adapter.platform, None)
            app.inbound.receivers.pop(adapter.platform, None)
        await app.liveness.stop(grace=app.stop_grace)


def settle_memory() -> None:
    """Keep what start-up built (modules, the ORM's mappers, templates: about 160,000 objects,
    all living as long as the process) out of the garbage collector's sight. A full
    collection walked all of them each time, 40 to 80 ms with the event loop held: the
    slowest webhook answers under load. Collected once first, so no garbage is kept."""
    gc.collect()
    gc.freeze()


async def run_until_signalled(app: BotApp, adapters: Sequence[PlatformAdapter]) -> None:
    """`fpbot run`: poll every platform until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with running(app, adapters, webhook=False, settle=True):
        names = ", ".join(a.platform for a in adapters)
        log.info("Focal Points Bot is running (%s); Ctrl-C stops it", names)
        await stop.wait()


def web_app(app: BotApp, adapters: Sequence[PlatformAdapter],
            extra_routes: Sequence[BaseRoute] = (), *, settle: bool = False) -> Starlette:
    """The ASGI app of `fpbot serve`: each adapter's endpoints, /healthz, and `extra_routes`
    (`settle`: see `running`)."""

    async def health(request: Request) -> JSONResponse:
        problem = await app.health()
        if problem:
            return JSONResponse({"ok": False, "store": problem}, status_code=503)
        return JSONResponse({"ok": True, "platforms": [a.platform for a in adapters]})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with running(app, adapters, webhook=True, settle=settle):
            yield

    routes: list[BaseRoute] = [Route("/healthz", health, methods=["GET"]), *preview.routes(app),
                               *extra_routes]
    for adapter in adapters:
        routes.extend(adapter.routes())
    return Starlette(routes=routes, lifespan=lifespan)


async def serve(app: BotApp, adapters: Sequence[PlatformAdapter], host: str, port: int) -> None:
    """`fpbot serve`: the webhook endpoints under uvicorn."""
    config = uvicorn.Config(web_app(app, adapters, settle=True), host=host, port=port,
                            log_config=None, lifespan="on")
    await uvicorn.Server(config).serve()
