"""How long work says how far it has come: a callback that `dmn`'s commands draw as a bar on a terminal.

    say("ingesting logs", done=12_000_000, total=80_000_000)   # a measure of the work: a bar and an estimate
    say("selecting experience")                                # none: the line alone

A library function that takes `on_progress` calls it so; passing None is silence, and `Printed()` prints
each new line.
"""

from __future__ import annotations

from typing import Callable, Protocol


class Progress(Protocol):
    def __call__(self, line: str, done: float | None = None, total: float | None = None) -> None:
        """`line`: what is being done; `done` of `total` (in any unit: updates, episodes, bytes) where known."""


def quiet(line: str, done: float | None = None, total: float | None = None) -> None:
    """The progress of work nobody watches."""


class Printed:
    """Progress as plain lines, for scripts and logs: each line once, when it is new, not at every measure.

    >>> world = load_world(home, "CartPole-v1", settings, on_train=Printed())  # doctest: +SKIP
    """

    def __init__(self, write: Callable[[str], object] = print):
        self.write, self.last = write, None

    def __call__(self, line: str, done: float | None = None, total: float | None = None) -> None:
        if line != self.last:
            self.write(line)
            self.last = line
