"""`fpbot` at its edges, as real processes (issue 8): bad store URLs, a reader that goes away,
Ctrl-C at the prompt, what `fpbot demo` says, a form left open in an earlier session."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from storage.demo import DEMO_ROSTER
from tests.test_cli import FPBOT, fpbot, workdir

__all__ = ["workdir"]  # the fixture, shared with test_cli


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'fpbot.db'}", **extra}
    for var in ("TELEGRAM_TOKEN", "SLACK_BOT_TOKEN"):
        env.pop(var, None)
    return env


@pytest.mark.parametrize(("url", "says"), [
    ("not-a-url", "fpbot: DATABASE_URL is not a database URL: use SQLite "
                  "(sqlite+aiosqlite:///fpbot.db) or PostgreSQL (postgresql://user:pw@host/db)"),
    ("mysql://fp:s3cret@db.example.org/fpbot",
     "fpbot: DATABASE_URL names 'mysql', which fpbot does not support: use SQLite "
     "(sqlite+aiosqlite:///fpbot.db) or PostgreSQL (postgresql://user:pw@host/db)"),
])
@pytest.mark.parametrize("command", [["db", "upgrade"], ["chat"], ["telegram", "set-webhook",
                                                                   "https://bot.example.org"]])
def test_a_database_url_fpbot_cannot_use_is_one_clear_line(
        tmp_path: Path, url: str, says: str, command: list[str]) -> None:
    result = subprocess.run([*FPBOT, *command], env=_env(tmp_path, DATABASE_URL=url),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [says]
    assert "s3cret" not in result.stderr and result.stdout == ""


def test_a_reader_that_stops_reading_ends_the_chat_quietly(workdir: Path) -> None:
    chat = shlex.join([*FPBOT, "chat", "--as", "fp.chile@demo.invalid"])
    pipeline = f"yes /help | head -n 400 | {chat} | head -n 1; echo \"rc=${{PIPESTATUS[2]}}\""
    result = subprocess.run(["bash", "-c", pipeline], env=_env(workdir), cwd=workdir,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == ["What you can do, Catalina Rojas (demo)", "rc=141"]
    assert result.stderr == ""


def _read_until(fd: int, wanted: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} in {seen[-200:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended before {wanted!r}: {seen[-200:]!r}"
            seen += chunk
    return seen


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_at_the_prompt_leaves_at_once(workdir: Path) -> None:
    terminal, keyboard = pty.openpty()  # the console is interactive only at a terminal
    try:
        # Ctrl-C as at a terminal: the suite itself may run in the background, where the
        # shell has its jobs ignore SIGINT, and a child would inherit that (and rightly
        # never leave on Ctrl-C).
        with subprocess.Popen([*FPBOT, "chat", "--as", "fp.chile@demo.invalid"],
                              env=_env(workdir), cwd=workdir, stdin=keyboard,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=_default_sigint) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            try:
                banner = _read_until(proc.stdout.fileno(), b"you>", 60)
                assert b"Focal Points Bot console, as Catalina Rojas (demo)" in banner
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=30) == 130  # no Enter needed
                assert proc.stderr.read() == b""
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        os.close(keyboard)
        os.close(terminal)


def test_demo_lists_every_person_it_reports(tmp_path: Path) -> None:
    result = subprocess.run([*FPBOT, "demo"], env=_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    emails = [line.split(",")[0] for line in DEMO_ROSTER.splitlines()[1:]]
    assert f"{len(emails)} of {len(emails)} demo people added." in result.stdout
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == emails
    germany = next(line for line in result.stdout.splitlines()
                   if line.startswith("  fp.germany@demo.invalid "))
    # the real chair of 2018, and the demo chair of a year around today (fpbot demo's troika)
    assert re.fullmatch(r"  fp\.germany@demo\.invalid   focal point of Germany \(chair 2018"
                        r"(, demo chair \d{4})?\): Julia Becker \(demo\)", germany), germany
    assert "  wilpf@demo.invalid        civil society: Sofia Lindqvist (demo)" in result.stdout
    again = subprocess.run([*FPBOT, "demo"], env=_env(tmp_path), cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert f"0 of {len(emails)} demo people added." in again.stdout


def test_a_new_console_session_shows_the_form_left_open(workdir: Path) -> None:
    first = fpbot(workdir, "chat", "--as", "fp.chile@demo.invalid", stdin="/update\nevent\n")
    assert "A short title?" in first.stdout
    second = fpbot(workdir, "chat", "--as", "fp.chile@demo.invalid", stdin="")
    assert second.stdout.startswith(
        "You are still filling in National update; it continues here (send /cancel to drop "
        "it).\nNational update · 2/6\nA short title?\n")
    assert "(/back · /cancel)" in second.stdout


def test_a_number_after_a_form_is_not_taken_for_one_of_its_answers(workdir: Path) -> None:
    result = fpbot(workdir, "chat", "--as", "fp.chile@demo.invalid",
                   stdin="/nap update\n/cancel\n2\n")
    assert "NAP status: cancelled." in result.stdout
    assert result.stdout.rstrip().endswith(
        "A number on its own answers a question of a form or picks a button, and no question "
        "is open now. To file an update, send /update or write the update in a sentence or "
        "two. Send /help to see what I can do.")


def test_a_store_another_process_keeps_locked_is_one_clear_line(workdir: Path) -> None:
    """Another process holds the SQLite write lock past the busy timeout (5 s) while fpbot
    starts: one sentence, exit 2, and the store is untouched (it was a 40-line traceback)."""
    holder = sqlite3.connect(workdir / "fpbot.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = subprocess.run([*FPBOT, "chat", "--as", "fp.chile@demo.invalid"],
                                input="/whoami\n", env=_env(workdir), cwd=workdir,
                                capture_output=True, text=True, timeout=120)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"fpbot: the database sqlite+aiosqlite:///{workdir / 'fpbot.db'} is locked: another "
        "process has been writing to it for over 5 s; try again when it is done"]
    assert result.stdout == ""
    again = subprocess.run([*FPBOT, "chat", "--as", "fp.chile@demo.invalid"],
                           input="/whoami\n", env=_env(workdir), cwd=workdir,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Catalina Rojas" in again.stdout
