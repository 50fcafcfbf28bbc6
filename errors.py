"""The one user-facing error type, and the one place it becomes a message and an exit code.

Library modules (data, models, inference, metrics, losses) raise plain exceptions with
precise messages: ValueError for a value that cannot work, FileNotFoundError for a missing
file. The command-line layer (the scripts, options.py, training.py) knows which option or
file a value came from; it translates those into `UserError` with `user_errors`, and the
scripts wrap their `main` in `run_cli`, so a user sees one clear line on stderr and a
non-zero exit status, never a Python traceback. Set SEGMENTATION_DEBUG=1 to see the full
chain of causes as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from typing import Callable, Iterator, Sequence

DEBUG_VARIABLE = "SEGMENTATION_DEBUG"


class UserError(Exception):
    """A problem the user can fix; its message says what is wrong and how to fix it."""

    exit_code = 2


class Notice(UserWarning):
    """A library's warning about the user's input (a skipped file, and why).

    Libraries raise it with `warnings.warn`, so a caller can catch or silence it; `run_cli`
    prints it as one `warning: ...` line, without the Python file and source line that
    warnings otherwise show.
    """


def first_line(error: BaseException) -> str:
    """An exception's first line, for a one-line message; its type's name if it has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def message(error: BaseException) -> str:
    """An exception's whole text, or its type's name if it has none.

    An OSError raised by the operating system reads `FILE: reason`, without Python's
    `[Errno N]` prefix; one raised with a message of its own keeps it.
    """
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error).strip() or type(error).__name__


@contextlib.contextmanager
def user_errors(prefix: str | None = None, types: tuple[type[BaseException], ...] = (ValueError, OSError)) -> Iterator[None]:
    """Turns a library's ValueError or OSError into a UserError, optionally naming the option.

    Only the calls it surrounds are translated: a ValueError from a bug elsewhere still
    shows its traceback. The original exception stays attached as the cause.
    """
    try:
        yield
    except types as error:
        raise UserError(f"{prefix}: {message(error)}" if prefix else message(error)) from error


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def interrupt_quietly_while_starting() -> None:
    """A Ctrl-C in the seconds a script spends importing TensorFlow, before `run_cli` runs,
    exits with status 130 and one line, not with a traceback through Python's importer.

    Scripts call it before their heavy imports; `run_cli` puts Python's own handler back.
    """

    def stop(signum, frame) -> None:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, stop)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's main: UserError becomes `error: ...` on stderr and its exit code, Ctrl-C 130."""
    if threading.current_thread() is threading.main_thread():  # Ctrl-C raises KeyboardInterrupt again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_notices_plainly(warnings.showwarning)
            return int(main(argv) or 0)
    except UserError as error:
        if debugging():
            traceback.print_exception(error, file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        if not debugging() and error.__cause__ is not None:
            print(f"(set {DEBUG_VARIABLE}=1 for the full cause)", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # training saves its state first; everything else has nothing to save
        print("\ninterrupted", file=sys.stderr)
        return 130


def _show_notices_plainly(show: Callable[..., None]) -> Callable[..., None]:
    """`warnings.showwarning` that prints a Notice as `warning: ...`, and passes the rest to `show`."""

    def show_plainly(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, Notice) and not debugging():
            print(f"warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    return show_plainly
