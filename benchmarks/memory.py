"""Memory: the resident set (/proc/<pid>/status VmRSS) of `fpbot serve`, idle and after the
ingest load, against the echo bot's.

The processes are ingest's (`benchmarks/ingest.py`): idle is read 2 s after /healthz first
answers, "after load" once the last round's replies are all out. When ingest has run with the
same options in this process its measurements are reused; otherwise the webhook part of
ingest runs here (SQLite and PostgreSQL, no polling). Target: under 120 MiB after the load.
"""

from __future__ import annotations

from benchmarks import ingest
from benchmarks.common import Figure, Options

NAME = "memory"
LIMIT_MIB = 120.0


async def run(opts: Options) -> list[Figure]:
    blocks = ingest.reuse(opts) or await ingest.measure(opts, polling=False)
    found: list[Figure] = []
    for block in blocks:
        db = block.database
        idle, loaded = f"RSS idle ({db})", f"RSS after the ingest load ({db})"
        if block.error:
            found += [Figure(NAME, idle, None, note=block.error),
                      Figure(NAME, loaded, None, note=block.error)]
            continue
        project, echo = block.webhook["project"], block.webhook["echo"]
        found += [
            Figure(NAME, idle, project.rss_idle_mib, echo.rss_idle_mib, "MiB",
                   note="fpbot serve vs the echo bot, 2 s after start-up"),
            Figure(NAME, loaded, project.rss_loaded_mib, echo.rss_loaded_mib, "MiB",
                   f"< {LIMIT_MIB:.0f} MiB", project.rss_loaded_mib < LIMIT_MIB,
                   f"after {project.updates} updates ({len(project.rounds)} round(s))"),
        ]
    return found
