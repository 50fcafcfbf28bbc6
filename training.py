"""The training core both training scripts share: options, devices, the fit loop, the run folder.

A run folder holds everything a person needs to judge a run and to continue it:
  best.keras, last.keras     the model with the best validation mean IoU, and the latest
  history.csv, curves.png    every metric per epoch, and loss / accuracy / mean IoU curves
  predictions/epoch_NNN.png  a fixed set of validation images: input, true and predicted mask
  metrics.json               the final test-set evaluation and the run's settings
  config.json, state.json    the arguments (for --resume) and the last finished epoch
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

import data
import losses
import visualize
from errors import UserError
from files import atomic_path, write_json, write_text

BuildModel = Callable[[argparse.Namespace, tuple[int, int, int], int], keras.Model]


@dataclass
class Phase:
    """Train until epoch `until` at `learning_rate`; `prepare` changes the model first."""

    until: int
    learning_rate: float
    prepare: Callable[[keras.Model], None] | None = None


# --------------------------------------------------------------------------- options


def base_parser(script: str, description: str) -> argparse.ArgumentParser:
    """The options every training script shares; scripts add their model's own."""
    parser = argparse.ArgumentParser(
        prog=f"{script}.py", description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.set_defaults(script=script)
    add = parser.add_argument
    add("--data", default=data.TFDS_NAME, help=(
        f"'{data.TFDS_NAME}' (TensorFlow Datasets, downloaded on first use), 'synthetic' (generated "
        "shapes, for smoke runs), or a folder: the official Oxford-IIIT Pet archives unpacked "
        "(images/, annotations/), or your own images/ + masks/ (optionally under train/ and test/)"))
    add("--image-size", type=int, default=128, help="side of the square the images are resized to")
    add("--batch-size", type=int, default=64, help="global batch size, split across devices")
    add("--epochs", type=int, default=20, help="training epochs")
    add("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    add("--limit", type=int, default=None, help="use only the first N examples of each split (quick runs)")
    add("--seed", type=int, default=None, help="seed for weights, shuffling and flips; none: a new draw each run")
    add("--output", default=None, help="run folder to create (default: runs/<script>-<timestamp>)")
    add("--num-classes", type=int, default=3, help="classes in your own masks (Oxford-IIIT Pet and synthetic: 3)")
    add("--mask-offset", type=int, default=None,
        help="subtracted from stored mask values (default: 1 for Oxford-IIIT Pet trimaps, 0 for your own)")
    add("--holdout-fraction", type=float, default=0.2,
        help="share of a flat images/ + masks/ folder held out as the test split")
    add("--class-weights", default=None,
        help="per-class weights as '2,2,1', or 'balanced' (inverse class frequency in the training "
        "masks); applied as a per-pixel sample-weight map")
    add("--loss", choices=losses.LOSS_NAMES, default="sce",
        help="sce: sparse categorical cross-entropy; dice, focal, sce+dice: for imbalanced classes")
    add("--jit-compile", choices=("auto", "on", "off"), default="auto", help=(
        "XLA compilation. auto: off on a CPU-only machine (measured with TensorFlow 2.21 on a 2-core "
        "CPU: XLA made a training step of these models 2 to 3.5 times slower, see BENCHMARKS.md), "
        "Keras' own choice when a GPU is present"))
    add("--mixed-precision", action="store_true",
        help="compute in float16 on GPUs (logits and loss stay float32); slower on CPUs")
    add("--strategy", choices=("auto", "mirrored", "multiworker"), default="auto", help=(
        "auto: MirroredStrategy when there are several GPUs, else one device; mirrored: all local "
        "GPUs (or CPUs if none); multiworker: MultiWorkerMirroredStrategy configured by TF_CONFIG"))
    add("--show", type=int, default=4, help="validation images drawn in predictions/epoch_NNN.png")
    add("--resume", metavar="DIR", default=None,
        help="continue the interrupted run in DIR from its last finished epoch, with its settings")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options, or with --resume the settings saved in the run's config.json."""
    args = parser.parse_args(argv)
    if args.resume is None:
        return args
    run_dir = Path(args.resume)
    config_file = run_dir / "config.json"
    if not config_file.is_file() or not (run_dir / "state.json").is_file() or not (run_dir / "last.keras").is_file():
        raise UserError(f"--resume {run_dir}: that folder holds no run to resume (no config.json, state.json and last.keras)")
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"--resume {run_dir}: {config_file} is not valid JSON ({error})") from None
    if saved.get("script") != args.script:
        raise UserError(f"--resume {run_dir}: that run was made by {saved.get('script')}.py, not {args.script}.py")
    resumed = argparse.Namespace(**{**vars(parser.parse_args([])), **saved})
    resumed.resume = str(run_dir)
    resumed.output = str(run_dir)
    return resumed


def check_options(args: argparse.Namespace) -> None:
    for name in ("image_size", "batch_size", "num_classes", "show"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    if args.learning_rate <= 0:
        raise UserError(f"--learning-rate must be positive, got {args.learning_rate}")


# --------------------------------------------------------------------------- devices


def configure_precision(mixed: bool) -> None:
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy for `--strategy`; the batch size stays global under all."""
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if "TF_CONFIG" not in os.environ:
        raise UserError("--strategy multiworker needs the TF_CONFIG environment variable describing the cluster")
    return tf.distribute.MultiWorkerMirroredStrategy()


def resolve_jit_compile(choice: str) -> bool | str:
    if choice == "on":
        return True
    if choice == "off":
        return False
    return "auto" if tf.config.list_logical_devices("GPU") else False


# --------------------------------------------------------------------------- model set-up


def class_names(args: argparse.Namespace) -> list[str]:
    if args.data in (data.TFDS_NAME, data.SYNTHETIC) or _is_oxford_folder(args.data):
        if args.num_classes == 3:
            return list(data.OXFORD_CLASS_NAMES)
    return [f"class_{index}" for index in range(args.num_classes)]


def _is_oxford_folder(source: str) -> bool:
    return os.path.isdir(os.path.join(source, "annotations", "trimaps"))


def segmentation_metrics(names: Sequence[str]) -> list[keras.metrics.Metric]:
    """Pixel accuracy, mean IoU and each class's IoU, all on the argmax of the logits."""
    metrics = [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.MeanIoU(num_classes=len(names), sparse_y_pred=False, name="mean_iou"),
    ]
    metrics += [
        keras.metrics.IoU(num_classes=len(names), target_class_ids=[index], sparse_y_pred=False, name=f"iou_{name}")
        for index, name in enumerate(names)
    ]
    return metrics


def compile_model(model: keras.Model, args: argparse.Namespace, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=losses.get_loss(args.loss),
        metrics=segmentation_metrics(class_names(args)),
        jit_compile=resolve_jit_compile(args.jit_compile),
    )


# --------------------------------------------------------------------------- the run


def train(args: argparse.Namespace, build_model: BuildModel, phases: Sequence[Phase] | None = None) -> int:
    """Trains, records and evaluates one run; returns the exit status (130 after Ctrl-C)."""
    check_options(args)
    phases = list(phases or [Phase(args.epochs, args.learning_rate)])
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    configure_precision(args.mixed_precision)
    strategy = make_strategy(args.strategy)
    kind = "one device" if type(strategy).__name__.startswith("_Default") else type(strategy).__name__
    print(f"training on {strategy.num_replicas_in_sync} replica(s) with {kind}")
    if args.resume:
        run = RunDir(Path(args.output))
    else:  # checked now, created once data and model are ready: a failed start leaves nothing
        args.output = str(RunDir.unused_path(args.output, args.script))

    # The model first: a size it cannot take, or encoder weights it cannot fetch, should stop
    # the run before a dataset download, not after.
    input_shape = (args.image_size, args.image_size, 3)
    with strategy.scope():
        if args.resume:
            model = run.load_last_model()
            model.jit_compile = resolve_jit_compile(args.jit_compile)
        else:
            try:
                model = build_model(args, input_shape, args.num_classes)
            except ValueError as error:
                raise UserError(f"--image-size {args.image_size}: {error}") from None

    load_options = dict(
        image_size=args.image_size, limit=args.limit, num_classes=args.num_classes,
        mask_offset=args.mask_offset, holdout_fraction=args.holdout_fraction,
    )
    weights = None
    if args.class_weights is not None:
        weights = data.resolve_class_weights(args.class_weights, args.data, **load_options)
        print(f"class weights: {', '.join(f'{w:.3g}' for w in weights)}")
    train_ds = _distributable(data.build_dataset(
        args.data, "train", batch_size=args.batch_size, training=True, class_weights=weights, seed=args.seed,
        **load_options))
    val_ds = _distributable(data.build_dataset(
        args.data, "test", batch_size=args.batch_size, class_weights=weights, **load_options))
    shown = next(iter(data.build_dataset(args.data, "test", batch_size=args.show, **{**load_options, "limit": args.show})))
    if not args.resume:
        run = RunDir.create(Path(args.output))
        write_json(run.path / "config.json", vars(args))

    recorder = RunRecorder(run, shown[0].numpy(), shown[1].numpy())
    started = time.perf_counter()
    epoch = run.completed_epochs()
    verbose = 1 if sys.stdout.isatty() else 2
    try:
        for phase_start, phase in zip([0] + [p.until for p in phases[:-1]], phases):
            if epoch >= phase.until:
                continue
            if epoch == phase_start:  # a fresh phase; a resumed one keeps its optimizer state
                with strategy.scope():
                    if phase.prepare is not None:
                        phase.prepare(model)
                    compile_model(model, args, phase.learning_rate)
            model.fit(train_ds, validation_data=val_ds, epochs=phase.until, initial_epoch=epoch,
                      callbacks=[recorder], shuffle=False, verbose=verbose)
            epoch = run.completed_epochs()
    except KeyboardInterrupt:
        run.save_model(model, "last.keras")
        print(f"\ninterrupted: saved {run.path / 'last.keras'} and the history of "
              f"{run.completed_epochs()} finished epochs; continue with --resume {run.path}", file=sys.stderr)
        return 130
    if not getattr(model, "compiled", False):  # resumed with no epoch left, from a file saved uncompiled
        compile_model(model, args, phases[-1].learning_rate)

    print(f"evaluating on the test split ({args.data})")
    results = model.evaluate(val_ds, return_dict=True, verbose=verbose)
    write_json(run.path / "metrics.json", run_metrics(args, model, results, run, time.perf_counter() - started))
    print(f"test mean IoU {results['mean_iou']:.4f}, pixel accuracy {results['accuracy']:.4f}; run folder: {run.path}")
    return 0


def _distributable(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Shards by element under a multi-worker strategy: the sources are not file-sharded."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def run_metrics(args: argparse.Namespace, model: keras.Model, results: dict, run: "RunDir", seconds: float) -> dict:
    names = class_names(args)
    history = run.read_history()
    best = max(history, key=lambda row: row.get("val_mean_iou", -1.0), default={})
    return {
        "test": {
            "loss": float(results["loss"]),
            "accuracy": float(results["accuracy"]),
            "mean_iou": float(results["mean_iou"]),
            "iou_per_class": {name: float(results[f"iou_{name}"]) for name in names},
            "evaluated_model": "last.keras",
        },
        "epochs_completed": run.completed_epochs(),
        "best_epoch": best.get("epoch"),
        "best_val_mean_iou": best.get("val_mean_iou"),
        "parameters": {
            "total": int(model.count_params()),
            "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        },
        "seconds": round(seconds, 1),
        "settings": vars(args),
    }


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

    def completed_epochs(self) -> int:
        return int(json.loads((self.path / "state.json").read_text())["completed_epochs"])

    def load_last_model(self) -> keras.Model:
        try:
            return keras.models.load_model(self.path / "last.keras", safe_mode=True)
        except Exception as error:  # a damaged file surfaces as any of several types
            raise UserError(f"cannot load {self.path / 'last.keras'}: {error}") from None

    def save_model(self, model: keras.Model, name: str) -> None:
        with atomic_path(self.path / name) as temporary:
            model.save(temporary)

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


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: models, history, curves and a prediction picture, then the state.

    state.json is written last, so after an interruption it never counts an epoch whose
    files are not all there.
    """

    def __init__(self, run: RunDir, images: np.ndarray, masks: np.ndarray):
        super().__init__()
        self.run = run
        self.images = images
        self.masks = masks
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
            self.run.save_model(self.model, "best.keras")
        self.run.write_history(self.history)
        visualize.save_curves(self.run.path / "curves.png", self.history)
        predicted = np.argmax(self.model.predict_on_batch(self.images), axis=-1)
        visualize.save_prediction_panel(
            self.run.path / "predictions" / f"epoch_{number:03d}.png",
            (self.images * 255).round().astype(np.uint8), self.masks, predicted,
            f"epoch {number}: validation mean IoU {row.get('val_mean_iou', float('nan')):.3f}",
        )
        self.run.commit_epoch(number)
