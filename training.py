"""The fit loop both training scripts share: devices, phases, recipe, recording and evaluation.

A script parses its options (options.py), says how to build its model and which phases to
train (frozen encoder, then fine-tuning), and calls `train`. Everything a run writes goes
through its run folder (rundir.py); the optimizer and schedule of each phase come from
recipe.py.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

import data
import evaluation
import losses
import metrics
import recipe
from errors import Notice, UserError, user_errors
from files import write_json
from inference import keras_predictor, with_test_time_augmentation
from models import sizes
from options import EXTENDABLE, data_options, training_passes, validation_count
from progress import keras_verbose
from rundir import RunDir, RunRecorder

BuildModel = Callable[[argparse.Namespace, tuple[int, int, int], int], keras.Model]
# a peak learning rate of their own for some layers: (the rate, the names of those layers in the
# model being trained), such as the encoder's while the decoder keeps the phase's `learning_rate`
OwnRate = tuple[float, Callable[[keras.Model], Sequence[str]]]


@dataclass
class Phase:
    """Train until epoch `until` at peak `learning_rate`; `prepare` changes the model first.

    `prepare` changes the model in place and returns None, or returns the model to train from
    then on (a rebuilt one, such as the MobileNetV2 U-Net's unstrided copy for fine-tuning).
    `own_rate` gives some layers a peak of their own (`OwnRate`). `title` says what the phase
    trains; a run of several phases prints it when the phase starts, so a user watching the
    epochs knows why the steps slow down or the figures jump, and marks the phase's start in
    curves.png with `label`.
    """

    until: int
    learning_rate: float
    prepare: Callable[[keras.Model], keras.Model | None] | None = None
    own_rate: OwnRate | None = None
    title: str = ""
    label: str = ""


# --------------------------------------------------------------------------- devices


def configure_precision(mixed: str | None) -> None:
    """Keras' global policy for `--mixed-precision`: None (float32), "float16" or "bfloat16"."""
    keras.mixed_precision.set_global_policy(f"mixed_{mixed}" if mixed else "float32")


def precision_warning(mixed: str | None, has_gpu: bool, cpu_bfloat16: bool | None) -> str | None:
    """What `--mixed-precision` will cost where no GPU computes it, or None if nothing to say.

    Measured on 2 cores without bfloat16 instructions (`python bench/train_speed.py --tables
    precision`, BENCHMARKS.md section 2), a training step of either model took 1.9 to 3.4 times
    as long in float16 as in float32, and 5 to 10 times as long in bfloat16, which TensorFlow
    then emulates. `cpu_bfloat16`: None when unknown.
    """
    if mixed is None or has_gpu:
        return None
    if mixed == "float16":
        return ("--mixed-precision float16 without a GPU: CPUs compute float16 slowly (a training step took 2 to 3 "
                "times as long as in float32 on a 2-core CPU); leave it out, or give bfloat16 on a CPU with bfloat16 "
                "instructions")
    if mixed == "bfloat16" and cpu_bfloat16 is False:
        return ("--mixed-precision bfloat16 on a CPU without bfloat16 instructions (AVX512_BF16, AMX): TensorFlow "
                "emulates them (a training step took 5 to 10 times as long as in float32 on such a CPU); leave it out")
    return None


def cpu_has_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU lists bfloat16 instructions (AVX512_BF16 or AMX-BF16); None off Linux."""
    try:
        flags = next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags.split(":", 1)[-1].split()))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy for `--strategy`; the batch size stays global under all.

    Call it before anything else touches TensorFlow: a multi-worker strategy configures its
    collectives at start-up, which fails once even a device list has been asked for.
    """
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs the TF_CONFIG environment variable describing the cluster")
        return NestedReduceMultiWorkerStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


class NestedReduceMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3.15's fit hands it.

    Two gaps between them, both met at the first step (keras-team/keras#20585, open):
      * fit reduces a whole first batch, (images, masks), in one call to learn its shapes;
        this strategy reduces single values only ("Attempt to convert a value (PerReplica...)");
      * fit reduces its scalar metric logs with axis=0, which a scalar does not have
        ("Invalid reduction dimension 0 for input with 0 dimensions").
    Each value is reduced on its own, and a scalar across the replicas only.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def one(item):
            local = self.experimental_local_results(item)[0]
            rank = getattr(getattr(local, "shape", None), "rank", None)
            return parent.reduce(reduce_op, item, None if axis is not None and rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def resolve_jit_compile(choice: str) -> bool | str:
    if choice == "on":
        return True
    if choice == "off":
        return False
    return "auto" if tf.config.list_logical_devices("GPU") else False


# --------------------------------------------------------------------------- a phase's recipe


def compile_phase(model: keras.Model, args: argparse.Namespace, learning_rate: float, phase_steps: int,
                  steps_per_epoch: int, class_names: Sequence[str],
                  own_rate: OwnRate | None = None) -> None:
    """Compiles with a fresh optimizer whose schedule spans this phase's `phase_steps`
    (with `own_rate`, those layers' schedule has the same shape and their own peak).

    The optimizer is built here, eagerly. Left to Keras on one device, it builds its slot
    variables while the train step is being traced, and a tf.function that creates variables
    is traced a second time: 1.6 s more at the start of a MobileNetV2 U-Net run and 2.4 s
    more when fine-tuning starts, measured (under a distribution strategy Keras builds first).
    """
    def schedule(peak: float) -> recipe.LearningRate:
        return recipe.create_schedule(args.schedule, peak, phase_steps, round(args.warmup_epochs * steps_per_epoch))

    groups = [] if own_rate is None else [(own_rate[1](model), schedule(own_rate[0]))]
    ignored = data.IGNORED if getattr(args, "ignore_class", None) is not None else None
    model.compile(
        optimizer=recipe.create_optimizer(args.optimizer, schedule(learning_rate), args.weight_decay, layer_groups=groups),
        loss=losses.get_loss(args.loss, ignore_class=ignored),
        metrics=metrics.segmentation_metrics(class_names, ignore_class=ignored),
        jit_compile=resolve_jit_compile(args.jit_compile),
    )
    model.optimizer.build(model.trainable_variables)


def continue_phase(model: keras.Model, args: argparse.Namespace, learning_rate: float, phase_steps: int,
                   steps_per_epoch: int, class_names: Sequence[str],
                   own_rate: OwnRate | None = None) -> None:
    """Recompiles a resumed model for the phase's (possibly longer) plan, keeping its optimizer state."""
    saved = model.optimizer
    compile_phase(model, args, learning_rate, phase_steps, steps_per_epoch, class_names, own_rate)
    with user_errors(f"--resume {args.resume}"):
        recipe.transfer_optimizer_state(saved, model.optimizer)


def begin_phase(model: keras.Model, phase: Phase, args: argparse.Namespace, strategy: tf.distribute.Strategy, *,
                fresh: bool, phase_steps: int, steps_per_epoch: int, class_names: Sequence[str]) -> keras.Model:
    """Readies `model` for `phase` and returns the model to train from then on.

    A fresh phase runs its `prepare`, which may return another model (--crop is applied to it as
    to the first), then gets its own optimizer and schedule; a phase resumed midway keeps the
    saved optimizer state, on the schedule of the current plan.
    """
    with strategy.scope():
        if not fresh:
            continue_phase(model, args, phase.learning_rate, phase_steps, steps_per_epoch, class_names, phase.own_rate)
            return model
        if phase.prepare is not None:
            rebuilt = phase.prepare(model)
            if rebuilt is not None and rebuilt is not model:
                model = rebuilt
                if args.crop is not None:
                    train_on_windows(model, args.crop)
            recipe.configure_batchnorm(model, args.bn_momentum, strategy.num_replicas_in_sync > 1)
        compile_phase(model, args, phase.learning_rate, phase_steps, steps_per_epoch, class_names, phase.own_rate)
    return model


# --------------------------------------------------------------------------- stopping cleanly


class Stopped(Exception):
    """Training stopped by a signal; `exit_code` is 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class StopOnSignal(keras.callbacks.Callback):
    """SIGTERM (preemption, a scheduler, `docker stop`) and Ctrl-C stop training at the next batch.

    The handler only notes the signal; this callback raises at the next batch boundary, so a
    stop never lands inside the run folder's writes (which happen between epochs), and the
    epoch in progress is dropped: last.keras, history.csv and state.json keep describing the
    last finished epoch. A second Ctrl-C stops at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        super().__init__()
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def _check(self, batch=None, logs=None) -> None:
        if self.received is not None:
            raise Stopped(self.received)

    on_train_batch_end = on_test_batch_end = on_epoch_begin = _check


# --------------------------------------------------------------------------- the run


def train(args: argparse.Namespace, build_model: BuildModel, phases: Sequence[Phase] | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> int:
    """Trains, records and evaluates one run; returns the exit status (130 after Ctrl-C, 143 after SIGTERM).

    `callbacks` are added to Keras' fit (benchmarks use this to time and score each epoch).
    """
    # First: a multi-worker strategy must configure its collectives before TensorFlow starts.
    strategy = make_strategy(args.strategy)
    chief = is_chief(strategy)
    kind = "one device" if type(strategy).__name__.startswith("_Default") else type(strategy).__name__
    print(f"training on {strategy.num_replicas_in_sync} replica(s) with {kind}"
          + ("" if chief else " (a worker: the chief writes the run folder)"))
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    configure_precision(args.mixed_precision)
    if args.mixed_precision is not None:  # the devices and CPU flags are asked only then
        slow = precision_warning(args.mixed_precision, bool(tf.config.list_physical_devices("GPU")), cpu_has_bfloat16())
        if slow is not None:
            warnings.warn(slow, Notice)
    phases = list(phases or [Phase(args.epochs, args.learning_rate)])
    synchronized = strategy.num_replicas_in_sync > 1
    if not args.resume:  # checked now, created once data and model are ready: a failed start leaves nothing
        args.output = str(RunDir.unused_path(args.output, args.script))
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="segmentation-worker-"))
    if scratch is not None:  # removed however this process ends, also before the run folder opens
        atexit.register(shutil.rmtree, scratch, True)
    options = data_options(args)
    if scratch is not None and options.cache == "disk":  # a worker's cache stays out of the user's folders
        options = dataclasses.replace(options, cache_dir=str(scratch / "cache"))
    names = data.class_names(args.data, options)

    # The model first: a size it cannot take, or encoder weights it cannot fetch, should stop
    # the run before a dataset download, not after.
    with strategy.scope():
        if args.resume and RunDir(Path(args.output)).completed_epochs() > 0:
            model = RunDir(Path(args.output)).load_last_model()
        else:  # a new run, or one stopped before its first epoch finished
            model = build_model(args, (args.image_size, args.image_size, 3), options.num_classes)
            recipe.configure_batchnorm(model, args.bn_momentum, synchronized)
        if args.crop is not None:
            train_on_windows(model, args.crop)

    with user_errors(f"--data {args.data}"):
        weights = None
        if args.class_weights is not None:
            weights = data.resolve_class_weights(args.class_weights, args.data, options)
            print(f"class weights: {', '.join(f'{w:.3g}' for w in weights)}")
        train_split = data.load_split(args.data, "train", options)
        test_split = data.load_split(args.data, "test", options)
    passes = training_passes(args.repeat, train_split.count, args.batch_size)
    train_ds = _distributable(data.batches(train_split, batch_size=args.batch_size, training=True,
                                           class_weights=weights, outline_weight=args.outline_weight,
                                           seed=args.seed, augmentations=args.augment, repeat=passes, crop=args.crop))
    val_split = data.spread_subset(test_split, validation_count(args.val_examples, train_split.count, test_split.count))
    val_ds = _distributable(data.batches(val_split, batch_size=args.batch_size, class_weights=weights,
                                         outline_weight=args.outline_weight))
    shown = next(iter(test_split.examples.take(args.show).batch(args.show)))
    steps_per_epoch = math.ceil(train_split.count * passes / args.batch_size)
    print(f"{train_split.count} training and {test_split.count} test examples ({val_split.count} scored after "
          f"each epoch); {counted(steps_per_epoch, 'step')} an epoch" + (f" ({passes} passes)" if passes > 1 else ""))

    with open_run_folder(args, scratch, options.cache_dir if options.cache == "disk" else None) as run:
        # traced once (again if a phase rebuilds the model): the panel each epoch, the test split at the end
        predictor = keras_predictor(model)
        recorder = RunRecorder(run, shown[0].numpy(), shown[1].numpy(), predictor, phase_starts(phases))
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(run.path / "logs"), write_graph=False)
        started = time.perf_counter()
        epoch = run.completed_epochs()
        verbose = keras_verbose()
        try:
            with StopOnSignal() as stop:
                for phase_start, phase in zip([0] + [p.until for p in phases[:-1]], phases):
                    if epoch >= phase.until:
                        continue
                    phase_steps = (phase.until - phase_start) * steps_per_epoch
                    if len(phases) > 1 and phase.title:
                        print(phase_heading(phase_start, phase, resumed_after=epoch if epoch > phase_start else None))
                    trained = begin_phase(model, phase, args, strategy, fresh=epoch == phase_start,
                                          phase_steps=phase_steps, steps_per_epoch=steps_per_epoch, class_names=names)
                    if trained is not model:  # saved as last.keras from now on, judged by a predictor of its own
                        model = trained
                        predictor = recorder.predict = keras_predictor(model)
                    with batches_counted_as_they_come():
                        model.fit(train_ds, validation_data=val_ds, epochs=phase.until, initial_epoch=epoch,
                                  callbacks=[stop, recorder, tensorboard, *callbacks], shuffle=False, verbose=verbose)
                    epoch = run.completed_epochs()
        except (Stopped, KeyboardInterrupt) as stopped:
            code = stopped.exit_code if isinstance(stopped, Stopped) else 130
            why = "interrupted" if code == 130 else f"stopped by {stopped}"
            finished = run.completed_epochs()
            kept = (f"{Path(args.output) / 'last.keras'} and the history hold the {counted(finished, 'finished epoch')}"
                    "; continue" if finished else "before the first epoch finished; start it again")
            print(f"\n{why}: {kept} with --resume {args.output}", file=sys.stderr)
            return code
        if not getattr(model, "compiled", False):  # resumed with no epoch left, from a file saved uncompiled
            compile_phase(model, args, phases[-1].learning_rate, 1, 1, names)

        print(f"evaluating on the test split ({args.data})")
        with user_errors(f"--data {args.data}"):
            count, test_photos = data.photos(args.data, "test", options)
            judged = evaluation.evaluate(with_test_time_augmentation(predictor, args.tta), test_photos, names,
                                         count=count, loss=compiled_loss(model, weights, args.outline_weight),
                                         show_progress=verbose == 1)
        figures = judged.figures()
        write_json(run.path / "metrics.json", run_metrics(args, model, judged.loss, figures, run,
                                                          time.perf_counter() - started, val_split.count, passes))
    if strategy.num_replicas_in_sync > 1 or not chief:
        print(f"weights digest {weights_digest(model)} (the same on every worker)")
    small, original = figures["model_size"], figures["original_size"]
    print(f"test mean IoU {small['mean_iou']:.4f}, pixel accuracy {small['accuracy']:.4f} at {args.image_size} px; "
          f"at each photo's own size {original['mean_iou']:.4f} and {original['accuracy']:.4f}; "
          f"run folder: {args.output}")
    return 0


def counted(number: int, noun: str) -> str:
    """"1 step", "15 steps"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def phase_starts(phases: Sequence[Phase]) -> list[tuple[int, str]]:
    """(first epoch, label) of each phase after the first, for the marks in curves.png."""
    return [(before.until + 1, phase.label or f"phase {number}")
            for number, (before, phase) in enumerate(zip(phases, phases[1:]), start=2)]


def phase_heading(start: int, phase: Phase, resumed_after: int | None = None) -> str:
    """"epochs 11 to 20: <title>", noting where a resumed run picks the phase up."""
    epochs = f"epoch {phase.until}" if phase.until == start + 1 else f"epochs {start + 1} to {phase.until}"
    resumed = f" (resumed after epoch {resumed_after})" if resumed_after is not None else ""
    return f"{epochs}{resumed}: {phase.title}"


def train_on_windows(model: keras.Model, crop: int) -> None:
    """Lets the model, built for whole photos, train on `crop` px windows (--crop); refused by
    name if its halvings cannot add back up from that size."""
    step = sizes.size_multiple(model)
    if crop % step:
        raise UserError(f"--crop {crop}: this model takes sizes in steps of {step} px ({crop} is not a multiple)")
    sizes.accept_any_size(model)


def compiled_loss(model: keras.Model, class_weights: Sequence[float] | None,
                  outline_weight: float = 1.0) -> Callable[[np.ndarray, np.ndarray], float]:
    """The compiled loss of a batch, from model-size masks (-1 where ignored) and logits, as fit computes it.

    The end of a run judges the test split in one pass over its photos (evaluation.evaluate),
    which gives both sizes' figures; this adds the loss of the logits judged, so the split is
    not read and run through the model a second time for it. With --tta none it is the loss
    Keras' evaluate reports; with flip, that of the averaged logits.
    """
    def loss(truth: np.ndarray, logits: np.ndarray) -> float:
        labels = np.where(truth < 0, data.IGNORED, truth).astype(np.int32)[..., None]
        weights = (data.pixel_weights(labels, class_weights, outline_weight)
                   if data.weighs_pixels(class_weights, outline_weight) else None)
        return float(keras.ops.convert_to_numpy(model.loss(labels, logits, sample_weight=weights)))

    return loss


@contextlib.contextmanager
def batches_counted_as_they_come() -> Iterator[None]:
    """Keras' "Your input ran out of data ... use .repeat()" warning silenced: it is wrong here.

    A folder's split drops unreadable files as it reads them, so tf.data cannot count its
    batches ahead; Keras learns the count at the end of the first pass and warns, although
    one pass per epoch is exactly what is meant.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except a multi-worker run's workers 1, 2, ..."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def open_run_folder(args: argparse.Namespace, scratch: Path | None, cache_dir: str | None) -> Iterator[RunDir]:
    """The run folder for this process to write: the real one for the chief (scratch None).

    Other workers of a multi-worker run take part in every save (Keras' collectives need
    them), so they write the same files into their `scratch` folder, started from the run's
    saved files on --resume, and removed at the end. A disk cache's folder is made here, and
    a lock a killed run left on it is lifted.
    """
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for lock in Path(cache_dir).glob("*.lockfile"):
            lock.unlink(missing_ok=True)
    if scratch is None:
        run = RunDir(Path(args.output)) if args.resume else RunDir.create(Path(args.output))
        if not args.resume:
            write_json(run.path / "config.json", vars(args))
        run.recover()
        if args.resume:  # a later --resume without --epochs keeps this plan
            run.plan_epochs({dest: getattr(args, dest) for dest in EXTENDABLE if dest in vars(args)})
        yield run
        return
    try:
        if args.resume:
            shutil.copytree(args.output, scratch / "run",
                            ignore=shutil.ignore_patterns("logs", "predictions", "cache", ".*"))
            run = RunDir(scratch / "run")
            (run.path / "predictions").mkdir(exist_ok=True)
            RunDir(Path(args.output)).copy_committed_models(run)  # the copy skips staged (hidden) files
        else:
            run = RunDir.create(scratch / "run")
        yield run
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def weights_digest(model: keras.Model) -> str:
    """A short SHA-256 of every weight, to check that workers ended with the same model."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def _distributable(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Shards by element under a multi-worker strategy: the sources are not file-sharded."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def run_metrics(args: argparse.Namespace, model: keras.Model, loss: float, figures: dict, run: RunDir,
                seconds: float, validation_examples: int, passes: int) -> dict:
    history = run.read_history()
    best = max(history, key=lambda row: row.get("val_mean_iou", -1.0), default={})
    return {
        "test": {
            "loss": float(loss),
            "accuracy": figures["model_size"]["accuracy"],
            "mean_iou": figures["model_size"]["mean_iou"],
            "iou_per_class": figures["model_size"]["iou_per_class"],
            "evaluated_model": "last.keras",
            "tta": args.tta,
            "original_size": figures["original_size"],
        },
        "epochs_completed": run.completed_epochs(),
        "best_epoch": best.get("epoch"),
        "best_val_mean_iou": best.get("val_mean_iou"),
        "validation_examples": validation_examples,  # the test examples scored after each epoch
        "parameters": {
            "total": int(model.count_params()),
            "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        },
        "recipe": recipe_summary(args, passes),
        "seconds": round(seconds, 1),
        "settings": vars(args),
    }


def recipe_summary(args: argparse.Namespace, passes: int) -> dict:
    """The choices that make the recipe, in one place of metrics.json (`passes`: --repeat resolved)."""
    summary = {
        "optimizer": args.optimizer,
        "weight_decay": args.weight_decay if args.optimizer == "adamw" else 0.0,
        "schedule": args.schedule,
        "learning_rate": args.learning_rate,
        "warmup_epochs": args.warmup_epochs,
        "batch_size": args.batch_size,
        "repeat": passes,
        "bn_momentum": args.bn_momentum,
        "outline_weight": args.outline_weight,
        "augment": list(args.augment),
        "crop": args.crop,
        "epochs": args.epochs,
        "fine_tune_epochs": getattr(args, "fine_tune_epochs", 0),
    }
    for fine_tuning in ("fine_tune_learning_rate", "fine_tune_decoder_learning_rate"):  # the MobileNetV2 U-Net's
        if hasattr(args, fine_tuning):
            summary[fine_tuning] = getattr(args, fine_tuning)
    return summary
