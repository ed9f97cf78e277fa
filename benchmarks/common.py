"""What every benchmark shares: its options and the figures it reports.

Each benchmark module (`benchmarks/ingest.py`, `fanout.py`, …) has

    async def run(opts: Options) -> list[Figure]

which measures the project and its baseline in the same run, interleaved, in at least
`opts.rounds` rounds, and returns one `Figure` per line of the table (the median over the
rounds). `python -m benchmarks` runs them all, prints the table and writes RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    rounds: int = 3          # interleaved rounds of project and baseline; medians reported
    quick: bool = False      # small sizes, for a check that the benchmark works (not figures)
    pg_url: str | None = None  # a PostgreSQL to measure on (emptied by each benchmark), or None
    workdir: Path = Path("/tmp")  # scratch space (SQLite files, logs)


@dataclass(frozen=True)
class Figure:
    benchmark: str           # "ingest", "fan-out", "compile", "digest", "recovery", "memory"
    name: str                # what is measured, e.g. "webhook answers/s (SQLite)"
    project: float | None    # the project's figure (median of the rounds)
    baseline: float | None = None  # the same-run baseline's figure, when there is one
    unit: str = ""           # "/s", "ms", "MiB", "calls", "s", "statements"
    target: str = ""         # the target it is held to, in words: "≥ 0.5× baseline", "< 100 ms"
    met: bool | None = None  # whether the target is met (None: no target)
    note: str = ""           # how it was measured or why it is missing

    @property
    def ratio(self) -> float | None:
        """project / baseline, when both are known and the baseline is not zero."""
        if self.project is None or not self.baseline:
            return None
        return self.project / self.baseline
