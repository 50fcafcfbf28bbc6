"""The one user-facing error type, and the one place it becomes a message and an exit code.

Library code (data.py, models/, training.py, predict.py) raises `UserError` for anything a
user can fix: a bad option, a folder of the wrong layout, a file that cannot be read, a
download that cannot happen here. Entry-point scripts wrap their `main` in `run_cli`, so a
user sees one clear line on stderr and a non-zero exit status, never a Python traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A problem the user can fix; its message says what is wrong and how to fix it."""

    exit_code = 2


def first_line(error: BaseException) -> str:
    """An exception's first line, for a one-line message; its type's name if it has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's main: UserError becomes `error: ...` on stderr and its exit code, Ctrl-C 130."""
    try:
        return int(main(argv) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # training saves its state first; everything else has nothing to save
        print("\ninterrupted", file=sys.stderr)
        return 130
