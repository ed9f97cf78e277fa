"""`fpbot run` and `fpbot serve` keep what start-up built out of the garbage collector's sight
(`bot.runner.settle_memory`): a full collection no longer walks it, so it no longer holds the
event loop for tens of milliseconds under load."""

from __future__ import annotations

import subprocess
import sys


def test_what_start_up_built_is_frozen_and_garbage_is_not() -> None:
    """In a process of its own (freezing the test process would keep every test's objects)."""
    script = """
import gc
import bot.cli, bot.app, bot.adapters.telegram, bot.adapters.slack  # what fpbot imports
class Cycle:
    pass
garbage = Cycle(); garbage.me = garbage; del garbage  # unreachable, only a collection frees it
tracked = len(gc.get_objects())
from bot.runner import settle_memory
settle_memory()
cycles = sum(isinstance(o, Cycle) for o in gc.get_objects(generation=2))
print(tracked, gc.get_freeze_count(), cycles)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    tracked, frozen, cycles = (int(n) for n in done.stdout.split())
    assert tracked > 50_000  # start-up builds a lot (about 160,000 objects)
    assert frozen >= tracked * 0.9  # nearly all of it frozen: a full collection skips it
    assert cycles == 0  # the garbage was collected first, not frozen for ever

