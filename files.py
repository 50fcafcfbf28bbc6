"""Writing files so that an interruption never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `final` (same suffix); renames it over `final` on success.

    A reader sees either the old file or the whole new one: os.replace is atomic on one
    file system, and the temporary file is removed if writing fails or is interrupted.
    """
    final = Path(final)
    temporary = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: str | os.PathLike, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def check_folder_can_be_made(path: str | os.PathLike) -> None:
    """Raises NotADirectoryError naming the file in the way when `path` is, or lies under, a file.

    Checked before a run's work, so that a mistyped output folder is refused at once rather than
    failing at the first write, minutes later.
    """
    path = Path(path)
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if not nearest.is_dir():
        raise NotADirectoryError(f"{nearest} is a file, not a folder")
