"""The run folder: everything a person needs to judge a run and to continue it.

  best.keras, last.keras     the model with the best validation mean IoU, and the latest
  history.csv, curves.png    every metric per epoch, and loss / accuracy / mean IoU curves
  predictions/epoch_NNN.png  a fixed set of validation images: input, true and predicted mask
  logs/                      TensorBoard logs (tensorboard --logdir runs/)
  metrics.json               the final test-set evaluation, the recipe and the run's settings
  config.json, state.json    the arguments the run started with (for --resume), and the last
                             finished epoch (with the epoch counts a resume raised them to)

Every file is written to a temporary name and renamed, so an interruption never leaves a
half-written file. An epoch's models are staged under hidden names, state.json then counts
the epoch, and only then do the staged models take their places: after a kill at any point,
last.keras and best.keras are those of the epoch state.json counts, once the folder is
opened again (RunDir.recover; a reader that must not write asks RunDir.committed_file).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

import visualize
from errors import UserError, first_line, user_errors
from files import atomic_path, check_folder_can_be_made, write_json, write_text


class RunDir:
    """A run folder: its models, history and state, each written atomically."""

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def unused_path(output: str | None, script: str, *, resumable: bool = True) -> Path:
        """--output, or runs/<script>-<timestamp>; refused if it holds anything already, or cannot be made.

        `resumable`: the refusal suggests --resume (a training run's folder), or only a new folder
        (evaluate.py's)."""
        if output is None:
            output = os.path.join("runs", f"{script}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        path = Path(output)
        if path.exists() and not path.is_dir():
            raise UserError(f"--output {path} is a file, not a folder; choose a new folder")
        if path.exists() and any(path.iterdir()):
            raise UserError(f"--output {path} already exists and is not empty; choose a new folder"
                            + (f" or continue that run with --resume {path}" if resumable else ""))
        with user_errors(f"--output {path}"):
            check_folder_can_be_made(path)
        return path

    @classmethod
    def create(cls, path: Path) -> "RunDir":
        (path / "predictions").mkdir(parents=True, exist_ok=True)
        write_json(path / "state.json", {"completed_epochs": 0})
        return cls(path)

    def recover(self) -> None:
        """Finishes or drops what a killed process left: temporary files, and staged models.

        Models staged for the epoch state.json counts take their places (the process was killed
        after the commit, before the renames); models staged for a later epoch, never counted,
        are removed.
        """
        for stale in [*self.path.glob(".*.tmp-*"), *self.path.glob("predictions/.*.tmp-*")]:
            stale.unlink(missing_ok=True)
        self._install_staged(self.completed_epochs())

    def committed_file(self, name: str) -> Path:
        """The file `name` stands for now: its staged version for the counted epoch if one is left."""
        staged = self._staged(name, self.completed_epochs())
        return staged if staged.is_file() else self.path / name

    def copy_committed_models(self, copy: "RunDir") -> None:
        """Puts into `copy` (a multi-worker run's worker folder) the models of the counted epoch
        that a killed chief left staged: only the chief may finish the commit itself."""
        for name in ("last.keras", "best.keras"):
            source = self.committed_file(name)
            if source.name != name:
                try:
                    shutil.copyfile(source, copy.path / name)
                except FileNotFoundError:  # the chief put it in place meanwhile
                    shutil.copyfile(self.path / name, copy.path / name)

    def _state(self) -> dict:
        return json.loads((self.path / "state.json").read_text())

    def completed_epochs(self) -> int:
        return int(self._state()["completed_epochs"])

    def planned_epochs(self) -> dict[str, int]:
        """The epoch counts a `--resume` raised the run's to ({} if none did): config.json keeps
        the counts the run started with, and these overrule them."""
        return dict(self._state().get("planned", {}))

    def plan_epochs(self, planned: dict[str, int]) -> None:
        write_json(self.path / "state.json", {**self._state(), "planned": planned})

    def load_last_model(self) -> keras.Model:
        path = self.committed_file("last.keras")
        try:
            return keras.models.load_model(path, safe_mode=True)
        except Exception as error:  # a damaged file surfaces as any of several types
            raise UserError(f"cannot load {path}: {first_line(error)}") from error

    def stage_model(self, model: keras.Model, name: str, epoch: int) -> None:
        """Saves `model` as epoch `epoch`'s `name`, which commit_epoch(epoch) puts in place."""
        remember_keras_attribute_skipsets()
        with atomic_path(self._staged(name, epoch)) as temporary:
            model.save(temporary)

    def stage_copy(self, source: str, name: str, epoch: int) -> None:
        """Epoch `epoch`'s `name` becomes the same file as its staged `source`: a hard link
        (no second write), else a copy. The next epoch's `source` is a new file, so `name`
        keeps this version.
        """
        with atomic_path(self._staged(name, epoch)) as temporary:
            try:
                os.link(self._staged(source, epoch), temporary)
            except OSError:  # a file system without hard links
                shutil.copyfile(self._staged(source, epoch), temporary)

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
        """Counts the epoch (the one atomic step), then puts its staged models in place."""
        write_json(self.path / "state.json", {**self._state(), "completed_epochs": epoch})
        self._install_staged(epoch)

    _STAGED = re.compile(r"\.(?P<stem>[^.]+)\.epoch-(?P<epoch>\d+)(?P<suffix>\.keras)")

    def _staged(self, name: str, epoch: int) -> Path:
        final = Path(name)
        return self.path / f".{final.stem}.epoch-{epoch:03d}{final.suffix}"

    def _install_staged(self, completed: int) -> None:
        for staged in self.path.glob(".*.epoch-*"):
            match = self._STAGED.fullmatch(staged.name)
            if match is None:
                continue
            if int(match["epoch"]) == completed:
                os.replace(staged, self.path / f"{match['stem']}{match['suffix']}")
            else:
                staged.unlink(missing_ok=True)


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

    The models are staged and state.json is committed last, so after an interruption it never
    counts an epoch whose files are not all there (see the module's docstring).
    """

    def __init__(self, run: RunDir, images: np.ndarray, masks: np.ndarray,
                 predict: Callable[[np.ndarray], np.ndarray], phase_starts: Sequence[tuple[int, str]] = ()):
        """`images`: uint8 (N, S, S, 3) validation images to draw each epoch; `masks` their true masks;
        `predict`: the model's logits for uint8 images (inference.keras_predictor's, compiled once);
        `phase_starts`: the curves' marks, as visualize.TrainingCurves takes them.
        """
        super().__init__()
        self.run = run
        self.images = images
        self.predict = predict
        self.curves = visualize.TrainingCurves(phase_starts)
        self.panel = visualize.PredictionPanel(images, masks)
        self.history = run.read_history()
        scores = [row["val_mean_iou"] for row in self.history if "val_mean_iou" in row]
        self.best = max(scores, default=-1.0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        number = epoch + 1
        row = {"epoch": number, **{key: float(value) for key, value in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < number] + [row]
        self.run.stage_model(self.model, "last.keras", number)
        if row.get("val_mean_iou", -1.0) > self.best:
            self.best = row["val_mean_iou"]
            self.run.stage_copy("last.keras", "best.keras", number)
        self.run.write_history(self.history)
        self.curves.save(self.run.path / "curves.png", self.history)
        predicted = np.argmax(self.predict(self.images), axis=-1)
        self.panel.save(self.run.path / "predictions" / f"epoch_{number:03d}.png", predicted,
                        f"epoch {number}: validation mean IoU {row.get('val_mean_iou', float('nan')):.3f}")
        self.run.commit_epoch(number)
