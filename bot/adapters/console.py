"""The console: talk to the bot from a terminal, or drive whole conversations through a pipe.

One message per input line; replies go to standard output as plain text. Buttons are listed
with numbers, and typing a number presses one. The console is trusted: `--as EMAIL` speaks as
that person of the roster.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from bot.adapters.rendering import message_text
from bot.delivery.errors import Parts
from handlers.dispatch import Core
from handlers.types import Choice, Incoming, OutFile, Outgoing, Route
from messages import Renderer

ANONYMOUS = "local"


class ConsoleAdapter:
    """Reads lines, hands them to the core, prints the replies."""

    platform = "console"
    reads_back = False

    def __init__(
        self,
        core: Core,
        renderer: Renderer,
        *,
        user: str = ANONYMOUS,
        display_name: str = "",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        locale: str = "en",
        files_dir: Path | None = None,
    ) -> None:
        self.core = core
        self.renderer = renderer
        self.user = user
        self.display_name = display_name
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.locale = locale
        self.files_dir = files_dir or Path("fpbot-files")
        self.buttons: list[Choice] = []
        self.in_form = False

    # -- the sender's view of this adapter ------------------------------------------------
    def reaches(self, chat_id: str) -> bool:
        return chat_id == self.user

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        """Show a notice queued for the person at this console."""
        self.show([Outgoing(message.key, {"tz": tz, **message.context}, message.choices,
                            file=message.file, private=message.private)], notice=True)

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        """The sender's call: a notice for the person at this console (its own replies are
        shown as the core returns them)."""
        await self.send(chat_id, message, locale=locale, tz=tz)

    def plan(self, inc: Incoming, replies: list[Outgoing],
             hints: Mapping[str, Any]) -> list[Route]:
        """Replies to a kept console line go back to this console, in order."""
        return [Route(inc.chat_id, r, {}, f"console:{inc.chat_id}") for r in replies]

    async def prepare(self, inc: Incoming) -> Incoming:
        return inc

    # -- the conversation -----------------------------------------------------------------
    def to_incoming(self, line: str) -> Incoming:
        text = line.strip()
        if text.isdigit() and self.buttons and not self.in_form:
            number = int(text)
            if 1 <= number <= len(self.buttons):
                text = self.buttons[number - 1].value
        return Incoming(platform="console", user_id=self.user, chat_id=self.user, text=text,
                        display_name=self.display_name, locale=self.locale)

    def show(self, replies: Sequence[Outgoing], *, notice: bool = False) -> None:
        for out in replies:
            lines = []
            if notice:
                lines.append(self._say("console.notice"))
            lines.append(message_text(self.renderer, out, self.locale, "plain"))
            if out.choices:
                lines += [f"  {n}) {c.label}" for n, c in enumerate(out.choices, 1)]
            if out.step is not None:
                controls = ["/cancel"]
                if out.step.can_go_back:
                    controls.insert(0, "/back")
                if not out.step.field.required:
                    controls.insert(0, "/skip")
                lines.append("  " + self._say("console.controls", controls=controls))
            if out.file is not None:
                lines.append("  " + self._say("console.file", name=out.file.name,
                                              size=len(out.file.content),
                                              path=str(self.save(out.file))))
            print("\n".join(lines), file=self.stdout)
            print(file=self.stdout)
            if not notice:
                self.in_form = out.step is not None
            if out.step is not None:
                self.buttons = []  # a question's choices are answers, never command buttons
            elif out.choices:
                self.buttons = list(out.choices)
        self.stdout.flush()

    def save(self, file: OutFile) -> Path:
        """Write a file the bot sends into the files folder; its path."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / (Path(file.name).name or "file")
        path.write_bytes(file.content)
        return path

    def _say(self, key: str, **context: object) -> str:
        return self.renderer.render(key, self.locale, "plain", **context)

    def banner(self) -> str:
        """The greeting of an interactive session."""
        return self._say("console.banner", name=self.display_name,
                         email=self.user if self.display_name else "")

    async def say(self, line: str) -> list[Outgoing]:
        """Handle one line as if typed; returns and prints the replies."""
        replies = await self.core.handle(self.to_incoming(line))
        self.show(replies)
        return replies

    async def run(self, outbox_sweep: object | None = None) -> None:
        """Converse until end of input (Ctrl-D) or /quit."""
        interactive = self.stdin.isatty()
        lines = self._lines()
        while True:
            if interactive:
                print(self._say("console.prompt"), end=" ", file=self.stdout, flush=True)
            line = await lines.get()
            if not line:
                break
            if line.strip() in ("/quit", "/exit"):
                break
            if not line.strip():
                continue
            await self.say(line)
            if outbox_sweep is not None:
                await outbox_sweep()  # type: ignore[operator]

    def _lines(self) -> asyncio.Queue[str]:
        """Input lines, read by a daemon thread: a blocked read never holds up Ctrl-C or exit.

        (A read in the loop's default executor would: `asyncio.run` waits for it to return,
        that is for the next Enter, before it lets the program end.)
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    line = self.stdin.readline()
                except (OSError, ValueError):  # stdin closed under us
                    line = ""
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, line)
                except RuntimeError:  # the loop is gone: the console has ended
                    return
                if not line:
                    return

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return queue
