"""progress.py and predict.py's output: plain lines, no escape codes, when output is not a terminal."""

import io

import numpy as np
from PIL import Image

import progress
from conftest import run_subprocess
from models import build_unet


def test_progress_off_a_terminal_prints_about_ten_plain_lines():
    stream = io.StringIO()
    bar = progress.Progress(95, "image", stream=stream)
    for done in range(0, 96, 5):
        bar.update(done)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    assert lines[0].startswith("10/95 images (10%)") and lines[-1].startswith("95/95 images (100%)")
    assert 9 <= len(lines) <= 11


def test_predict_into_a_log_file_writes_no_escape_codes(tmp_path):
    build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8)).save(tmp_path / "m.keras")
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.fromarray(np.full((40, 50, 3), 40 * index, np.uint8)).save(photos / f"p{index}.png")
    result = run_subprocess(["predict.py", "--model", tmp_path / "m.keras", "--input", photos,
                             "--output", tmp_path / "out", "--no-overlay"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "3/3 images (100%)" in result.stdout and "wrote 3 image(s)" in result.stdout
