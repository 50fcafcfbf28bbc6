"""Progress output that suits where it goes: Keras' animated bar on a terminal, plain lines elsewhere.

Keras' Progbar redraws one line with ANSI colour codes, which turns a log file or a CI log
into one long line of escape sequences; Keras itself only offers `verbose=2` (one line at the
end) for that case. Long jobs in a log still want to show that they move, so off a terminal
`Progress` prints a plain line about every tenth of the work.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import keras


def on_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def keras_verbose() -> int:
    """The `verbose` for model.fit / evaluate: 1 (animated bar) on a terminal, 2 (a line an epoch) elsewhere."""
    return 1 if on_terminal() else 2


class Progress:
    """Counts work done out of `total`; a Keras bar on a terminal, else a line every ~10%."""

    def __init__(self, total: int, unit: str, *, stream: TextIO | None = None):
        self.total = max(int(total), 0)
        self.unit = unit
        self.stream = stream or sys.stdout
        self.started = time.perf_counter()
        self.bar = keras.utils.Progbar(self.total, unit_name=unit) if on_terminal(self.stream) else None
        self._next_line = self._step = max(1, -(-self.total // 10))
        self._done = 0

    def update(self, done: int) -> None:
        self._done = done
        if self.bar is not None:
            self.bar.update(done)
            return
        while done >= self._next_line and self._next_line < self.total:
            self._line(self._next_line)
            self._next_line += self._step

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.update(self.total, finalize=True)
        else:
            self._line(self.total)

    def _line(self, done: int) -> None:
        seconds = time.perf_counter() - self.started
        rate = f", {done / seconds:.1f} {self.unit}s/s" if seconds > 0 and done else ""
        percent = f" ({100 * done // self.total}%)" if self.total else ""
        print(f"{done}/{self.total} {self.unit}s{percent}{rate}", file=self.stream, flush=True)
