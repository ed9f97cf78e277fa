"""Run the benchmark suite: one table, and benchmarks/RESULTS.md.

    python -m benchmarks [--quick] [--rounds N] [--only NAME,...] [--database-url URL] [--keep]

Each benchmark module (see `benchmarks/common.py`) measures the project against its baseline,
interleaved, and returns its figures. PostgreSQL: `--database-url`, else TEST_DATABASE_URL,
else a throw-away cluster started here and removed at the end (`benchmarks/postgres.py`); each
benchmark empties that database. `--quick` uses small sizes and one round: it checks that the
benchmarks work; its figures are not to be quoted. The exit status is 1 when a benchmark
failed (an exception, or a figure it could not measure honestly), 0 otherwise, whether or not
the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import Figure, Options
from benchmarks.postgres import postgresql
from benchmarks.processes import REPO, progress

BENCHMARKS = ("ingest", "memory", "recovery", "fanout", "compile", "digest", "core")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
COLUMNS = ("benchmark", "figure", "project", "baseline", "ratio", "target", "met")

Runner = Callable[[Options], Awaitable[list[Figure]]]


@dataclass
class Outcome:
    """What one benchmark gave: its figures, or why it gave none, and how long it took."""

    name: str
    figures: list[Figure]
    seconds: float = 0.0
    problem: str = ""  # "missing: …" or "FAILED: …"

    @property
    def failed(self) -> bool:
        return self.problem.startswith("FAILED") or any(
            f.project is None and f.note.startswith("FAILED") for f in self.figures)


def load(name: str) -> Runner | str:
    """The benchmark's `run`, or why there is none."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"benchmarks.{name}":
            return f"missing: there is no benchmarks/{name}.py yet"
        return f"FAILED: importing benchmarks/{name}.py: {exc}"
    except Exception as exc:  # a broken module must not stop the others
        return f"FAILED: importing benchmarks/{name}.py: {type(exc).__name__}: {exc}"
    run = getattr(module, "run", None)
    if run is None:
        return f"FAILED: benchmarks/{name}.py has no run(opts)"
    return run  # type: ignore[no-any-return]


async def run_one(name: str, opts: Options) -> Outcome:
    runner = load(name)
    if isinstance(runner, str):
        return Outcome(name, [], problem=runner)
    began = time.monotonic()
    progress(f"{name}: starting")
    try:
        figures = await runner(opts)
    except Exception as exc:
        traceback.print_exc()
        return Outcome(name, [], time.monotonic() - began,
                       f"FAILED: {type(exc).__name__}: {exc}".splitlines()[0])
    seconds = time.monotonic() - began
    progress(f"{name}: done in {seconds:.0f} s")
    return Outcome(name, figures, seconds)


# -- output -----------------------------------------------------------------------------------
def number(value: float | None, unit: str = "") -> str:
    """A figure with its unit, to three significant digits or so."""
    if value is None:
        return "—"
    if float(value).is_integer():
        text = f"{value:.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text + unit if unit == "/s" else f"{text} {unit}".strip()


def row(f: Figure) -> list[str]:
    met = "—" if f.met is None else ("yes" if f.met else "NO")
    ratio = "—" if f.ratio is None else f"{f.ratio:.2f}×"
    project = number(f.project, f.unit)
    if f.project is None:  # why, in a word (the note says more)
        project = "FAILED" if f.note.startswith("FAILED") else "missing"
    return [f.benchmark, f.name, project, number(f.baseline, f.unit), ratio, f.target or "—",
            met]


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    table = []
    for o in outcomes:
        if o.problem:
            table.append([o.name, o.problem, "—", "—", "—", "—", "—"])
        table += [row(f) for f in o.figures]
    return table


def text_table(outcomes: list[Outcome]) -> str:
    table = [list(COLUMNS), *rows(outcomes)]
    widths = [min(max(len(r[i]) for r in table), 60) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell[:60].ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def notes(outcomes: list[Outcome]) -> list[str]:
    return [f"{f.benchmark} · {f.name}: {f.note}" for o in outcomes for f in o.figures if f.note]


def markdown(outcomes: list[Outcome], header: list[str]) -> str:
    def cells(r: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"

    lines = ["# Benchmark results", "", *header, "", cells(list(COLUMNS)),
             "|" + "|".join(" --- " for _ in COLUMNS) + "|", *map(cells, rows(outcomes)), "",
             "## Notes", "", *(f"- {n}" for n in notes(outcomes)), "",
             "## Time taken", "",
             *(f"- {o.name}: {o.seconds:.0f} s" + (f" ({o.problem})" if o.problem else "")
               for o in outcomes), ""]
    return "\n".join(lines)


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    distro = next((line.split("=", 1)[1].strip().strip('"')
                   for line in Path("/etc/os-release").read_text().splitlines()
                   if line.startswith("PRETTY_NAME=")), platform.system())
    load1, load5, _ = os.getloadavg()
    return [f"- machine: {cpu}, {os.cpu_count()} cores, {mem / 1024 / 1024:.1f} GiB RAM; "
            f"load average at the start {load1:.1f} (1 min), {load5:.1f} (5 min)",
            f"- Python {platform.python_version()}, {distro}, Linux {platform.release()}"]


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (with uncommitted changes)" if changed else "")


# -- main ---------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: stop like Ctrl-C, every process started stopped
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="fpbot-bench-"))
    began = time.monotonic()
    started = datetime.now(UTC)
    try:
        async with postgresql(args.database_url or os.environ.get("TEST_DATABASE_URL")) as pg:
            opts = Options(rounds=args.rounds or (1 if args.quick else 3), quick=args.quick,
                           pg_url=pg.url, workdir=workdir)
            outcomes = []
            for name in names:
                outcome = await run_one(name, opts)
                outcomes.append(outcome)
    finally:
        if args.keep:
            print(f"kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - began
    header = [f"- date: {started:%Y-%m-%d %H:%M} UTC; commit {commit()}",
              *machine(),
              f"- options: rounds {opts.rounds}, quick {'yes' if opts.quick else 'no'}, "
              f"benchmarks {', '.join(names)}",
              f"- PostgreSQL: {pg.reason}",
              f"- whole run: {total:.0f} s"]
    if opts.quick:
        header.append("- QUICK RUN: small sizes, to check that the benchmarks work; "
                      "do not quote these figures")
    print()
    print(text_table(outcomes))
    print()
    for line in notes(outcomes):
        print(f"  {line}")
    print()
    print("\n".join(header))
    RESULTS.write_text(markdown(outcomes, header), encoding="utf-8")
    print(f"\nwritten: {RESULTS.relative_to(REPO)}")
    return 1 if any(o.failed for o in outcomes) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and one round: check that everything works")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory (stores, every process's log)")
    parser.add_argument("--database-url",
                        help="a PostgreSQL to measure on (emptied!); default: "
                             "TEST_DATABASE_URL, else a throw-away cluster")
    return parser


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(_parser().parse_args())))
    except KeyboardInterrupt:
        sys.exit(130)
    except asyncio.CancelledError:  # SIGTERM
        sys.exit(143)
