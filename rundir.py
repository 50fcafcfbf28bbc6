"""The run folder: everything a person needs to judge a run and to continue it.

  best.keras, last.keras     the model with the best validation mean IoU, and the latest
  history.csv, curves.png    every metric per epoch, and loss / accuracy / mean IoU curves
  predictions/epoch_NNN.png  a fixed set of validation images: input, true and predicted mask
  logs/                      TensorBoard logs (tensorboard --logdir runs/)
  metrics.json               the final test-set evaluation, the recipe and the run's settings
  config.json, state.json    the arguments (for --resume) and the last finished epoch

Every file is written to a temporary name and renamed, and state.json last, so an
interruption never leaves a half-written file or an epoch counted whose files are missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Callable

import keras
import numpy as np

import visualize
from errors import UserError, first_line
from files import atomic_path, write_json, write_text


class RunDir:
    """A run folder: its models, history and state, each written atomically."""

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def unused_path(output: str | None, script: str) -> Path:
        """--output, or runs/<script>-<timestamp>; refused if it holds anything already."""
        if output is None:
            output = os.path.join("runs", f"{script}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        path = Path(output)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"--output {path} already exists and is not empty; choose a new folder "
                            f"or continue that run with --resume {path}")
        return path

    @classmethod
    def create(cls, path: Path) -> "RunDir":
        (path / "predictions").mkdir(parents=True, exist_ok=True)
        write_json(path / "state.json", {"completed_epochs": 0})
        return cls(path)

    def remove_stale_temporaries(self) -> None:
        """Temporary files a killed process left behind (never read: only renamed files are)."""
        for stale in [*self.path.glob(".*.tmp-*"), *self.path.glob("predictions/.*.tmp-*")]:
            stale.unlink(missing_ok=True)

    def completed_epochs(self) -> int:
        return int(json.loads((self.path / "state.json").read_text())["completed_epochs"])

    def load_last_model(self) -> keras.Model:
        try:
            return keras.models.load_model(self.path / "last.keras", safe_mode=True)
        except Exception as error:  # a damaged file surfaces as any of several types
            raise UserError(f"cannot load {self.path / 'last.keras'}: {first_line(error)}") from error

    def save_model(self, model: keras.Model, name: str) -> None:
        remember_keras_attribute_skipsets()
        with atomic_path(self.path / name) as temporary:
            model.save(temporary)

    def copy_file(self, source: str, name: str) -> None:
        """`name` becomes the same file as `source`: a hard link (no second write), else a copy.

        The next save of `source` replaces it with a new file, so `name` keeps this version.
        """
        with atomic_path(self.path / name) as temporary:
            try:
                os.link(self.path / source, temporary)
            except OSError:  # a file system without hard links
                shutil.copyfile(self.path / source, temporary)

    def read_history(self) -> list[dict]:
        """Rows of the finished epochs only: a row past state.json's count was never committed."""
        path = self.path / "history.csv"
        if not path.exists():
            return []
        completed = self.completed_epochs()
        with path.open(newline="") as file:
            rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(file)]
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return [row for row in rows if row["epoch"] <= completed]

    def write_history(self, rows: list[dict]) -> None:
        columns = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path / "history.csv", buffer.getvalue())

    def commit_epoch(self, epoch: int) -> None:
        write_json(self.path / "state.json", {"completed_epochs": epoch})


SAVEABLE_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def remember_keras_attribute_skipsets() -> None:
    """Works around a cache Keras 3 (3.15 included) never hits, which costs every model save time.

    To list a layer's saveable attributes, Keras' saving_lib.get_attr_skipset builds a
    throwaway Layer and takes its attribute names, meaning to keep the result in Keras' global
    state; but it looks the result up under "saving_attr_skiplist_<kind>" and stores it under
    "saving_attr_skipset_<kind>", so each save builds one throwaway layer per layer of the
    model: 0.09 s of the 0.45 s a save of the MobileNetV2 U-Net takes, and the run folder
    saves last.keras after every epoch. Storing the very sets the function computes under the
    key it reads gives the same files. Should Keras' internals move, this does nothing.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving.saving_lib import get_attr_skipset
    except ImportError:
        return
    for kind in SAVEABLE_KINDS:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:  # the state is per thread and cleared by clear_session
            global_state.set_global_attribute(key, get_attr_skipset(kind))


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: models, history, curves and a prediction picture, then the state.

    state.json is written last, so after an interruption it never counts an epoch whose
    files are not all there.
    """

    def __init__(self, run: RunDir, images: np.ndarray, masks: np.ndarray,
                 predict: Callable[[np.ndarray], np.ndarray]):
        """`images`: uint8 (N, S, S, 3) validation images to draw each epoch; `masks` their true masks;
        `predict`: the model's logits for uint8 images (inference.keras_predictor's, compiled once).
        """
        super().__init__()
        self.run = run
        self.images = images
        self.masks = masks
        self.predict = predict
        self.history = run.read_history()
        scores = [row["val_mean_iou"] for row in self.history if "val_mean_iou" in row]
        self.best = max(scores, default=-1.0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        number = epoch + 1
        row = {"epoch": number, **{key: float(value) for key, value in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < number] + [row]
        self.run.save_model(self.model, "last.keras")
        if row.get("val_mean_iou", -1.0) > self.best:
            self.best = row["val_mean_iou"]
            self.run.copy_file("last.keras", "best.keras")
        self.run.write_history(self.history)
        visualize.save_curves(self.run.path / "curves.png", self.history)
        predicted = np.argmax(self.predict(self.images), axis=-1)
        visualize.save_prediction_panel(
            self.run.path / "predictions" / f"epoch_{number:03d}.png", self.images, self.masks, predicted,
            f"epoch {number}: validation mean IoU {row.get('val_mean_iou', float('nan')):.3f}",
        )
        self.run.commit_epoch(number)
