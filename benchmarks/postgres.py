"""A throw-away PostgreSQL cluster for the benchmarks, as tests/run.sh starts one for the tests.

    async with postgresql(given) as pg:   # given: --database-url or TEST_DATABASE_URL, or None
        pg.url      # a database to measure on, or None
        pg.reason   # why there is none

With a URL given, that database is used (and emptied by each benchmark). Otherwise the newest
/usr/lib/postgresql/*/bin (or `pg_config --bindir`) runs `initdb` in a temporary directory
under /tmp, as the `postgres` user when we are root (initdb refuses root), with fsync,
synchronous commit and full-page writes off, listening on 127.0.0.1 only; it is stopped and
its directory removed on the way out. No binaries: no PostgreSQL, and the reason says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import free_port, progress
from storage.db import safe_url


@dataclass
class PostgreSQL:
    url: str | None
    reason: str = ""  # why `url` is None, or where it came from


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")])
    candidates = [*reversed(found)]
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            candidates.append(Path(subprocess.run(["pg_config", "--bindir"], check=True,
                                                  capture_output=True, text=True).stdout.strip()))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    """Run a server command as `postgres` when root, else as ourselves."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


async def _run(argv: list[str], cwd: Path, what: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(out.decode(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{tail}")


@contextlib.asynccontextmanager
async def postgresql(given: str | None) -> AsyncIterator[PostgreSQL]:
    if given:
        yield PostgreSQL(given, f"given: {safe_url(given)}")
        return
    bindir = find_bindir()
    if bindir is None:
        yield PostgreSQL(None, "no PostgreSQL server binaries (initdb, pg_ctl) on this machine "
                               "and no --database-url / TEST_DATABASE_URL")
        return
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            yield PostgreSQL(None, "running as root and there is no `postgres` user to run "
                                   "initdb as (tests/run.sh creates it)")
            return
    tmp = Path(tempfile.mkdtemp(prefix="fpbot-bench-pg.", dir="/tmp"))
    data = tmp / "data"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(tmp, "postgres", "postgres")
        port = free_port()
        progress(f"starting a throw-away PostgreSQL ({bindir.parent.name}) on 127.0.0.1:{port}")
        try:
            await _run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                     "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]),
                       tmp, "initdb")
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            await _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                     str(tmp / "server.log"), "-w", "-t", "60", "-o", options,
                                     "start"]), tmp, "pg_ctl start")
            started = True
            await _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        "postgres", "fpbot_bench"], tmp, "createdb")
        except RuntimeError as exc:
            yield PostgreSQL(None, f"the throw-away PostgreSQL did not start: {exc}")
            return
        yield PostgreSQL(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/fpbot_bench",
                         f"throw-away PostgreSQL {bindir.parent.name}, fsync off")
    finally:
        if started:
            with contextlib.suppress(RuntimeError, OSError):
                await _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                         "-w", "stop"]), tmp, "pg_ctl stop")
        shutil.rmtree(tmp, ignore_errors=True)
