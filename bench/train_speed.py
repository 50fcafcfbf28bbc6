"""Training throughput: the project's compile settings against the tutorial's, same architecture.

The tutorial compiles with model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(
from_logits=True), metrics=["accuracy"]) and Keras 3's defaults (jit_compile="auto", which turns
XLA on where Keras thinks it helps). The project adds mean IoU and per-class IoU, AdamW with a
cosine schedule, and turns XLA off on CPU-only machines; it trains with batches of 16
(MobileNetV2 U-Net) and 8 (U-Net) by default (more steps per epoch on small data), so that row
shows what smaller batches cost per image; the last row forces XLA on, to show what that choice avoids.
Images per second are the median of timed steps after warm-up, at 128x128.

A second table times whole runs: train_unet.py against the tutorial's way (its pipeline,
compile and model.fit, validating each epoch) for the same steps on the synthetic set, each
in a fresh process, start-up included; a third, what each of the run folder's per-epoch
writes costs for each model; a fourth, the first step of each phase (the train step's trace)
with the recipe's AdamW against Keras' own, which reads the schedule once per variable; a fifth,
what the MobileNetV2 U-Net's unstrided first convolution (--stem-stride 1; 2,1, the default at 128 px)
costs a step in each phase against MobileNetV2's stride 2, and the encoder's forward pass alone; a sixth,
where the time of a default MobileNetV2 run on the real photos of ../shared goes (about four minutes); a
seventh, a training step under each --mixed-precision against float32, as the scripts compile it (the
scripts warn when a 16-bit type will be slower: this table measures what they warn of).

    python bench/train_speed.py [--steps 5] [--warmup 2] [--repeats 3]
                                [--tables throughput,whole,writes,first,stem,run,precision]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from _common import REPO, SHARED_PETS, SHARED_WEIGHTS, machine, print_table

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import recipe  # noqa: E402
import train_mobilenet_unet  # noqa: E402
import train_unet  # noqa: E402
import training  # noqa: E402
from models import build_mobilenet_unet, build_unet  # noqa: E402
from models.mobilenet_unet import set_encoder_trainable  # noqa: E402

TABLES = ("throughput", "whole", "writes", "first", "stem", "run", "precision")


def images_per_second(model, x, y, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - started)
    return len(x) / statistics.median(times)


def default_mobilenet_unet(fine_tuning: bool = False, **overrides) -> keras.Model:
    """The MobileNetV2 script's default model at 128 px, with random weights (the arithmetic is the
    same): the frozen epochs' (stride 2), or when `fine_tuning` the fine-tuning ones' (stride 1), its
    encoder unfrozen from the script's layer as its second phase does.
    `overrides` replace the builder's keywords (stem_stride=2)."""
    model = build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None,
                                 **{**train_mobilenet_unet.architecture(128, fine_tuning), **overrides})
    if fine_tuning:
        set_encoder_trainable(model, True, from_layer=train_mobilenet_unet.FINE_TUNE_FROM)
    return model


def throughput(args: argparse.Namespace) -> None:
    """Images a second of the project's compile against the tutorial's, same architecture, batch sizes apart."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 128, 128, 3)).astype(np.float32)
    y = rng.integers(0, 3, (64, 128, 128, 1)).astype(np.int32)
    rows = []
    for name, module, build in (("U-Net", train_unet, lambda: build_unet((128, 128, 3), 3)),
                                ("MobileNetV2 U-Net", train_mobilenet_unet,
                                 lambda: build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None))):
        tutorial = build()
        tutorial.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         metrics=["accuracy"])
        baseline = images_per_second(tutorial, x, y, args.steps, args.warmup)
        rows.append([name, f"tutorial compile (jit_compile='auto' resolved to {tutorial.jit_compile})", baseline, 1.0])
        default_batch = module.build_parser().parse_args([]).batch_size
        for label, jit, batch in (("project compile, batch 64", "auto", 64),
                                  (f"project compile, batch {default_batch} (the default)", "auto", default_batch),
                                  ("project compile, batch 64, --jit-compile on", "on", 64)):
            project = build()
            options = module.build_parser().parse_args(["--data", "synthetic", "--jit-compile", jit])
            training.compile_phase(project, options, options.learning_rate, phase_steps=1000, steps_per_epoch=15,
                                   class_names=data.OXFORD_CLASS_NAMES)
            ours = images_per_second(project, x[:batch], y[:batch], args.steps * 64 // batch, args.warmup)
            rows.append([name, label, ours, ours / baseline])
    print_table("Training throughput, 128x128", ["model", "setting", "images/s", "ratio"], rows)



TUTORIAL_RUN = """
import sys, keras, tensorflow as tf
sys.path.insert(0, {repo!r})
import data
from models import build_unet
def split(name):
    images, masks = zip(*[(i.numpy(), m.numpy()) for i, m in data.load_examples("synthetic", name, data.DataOptions(image_size=128))])
    return tf.data.Dataset.from_tensor_slices((list(images), list(masks))).map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.float32))).cache()
flips = keras.layers.RandomFlip("horizontal", seed=42), keras.layers.RandomFlip("horizontal", seed=42)
train = split("train").shuffle(1000).batch(32).map(lambda x, y: (flips[0](x), flips[1](y))).prefetch(tf.data.AUTOTUNE)
test = split("test").batch(32)
model = build_unet((128, 128, 3), 3)
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(train, epochs={epochs}, validation_data=test, verbose=2)
"""


def whole_runs(epochs: int, repeats: int) -> list[list]:
    """Seconds of whole processes: the tutorial's way and train_unet.py, same data, steps and validation."""
    times: dict[str, list[float]] = {"tutorial's way (model.fit, validating each epoch)": [],
                                     "train_unet.py (run folder, pictures, final evaluation)": []}
    for _ in range(repeats):
        for name in times:
            with tempfile.TemporaryDirectory() as folder:
                if name.startswith("tutorial"):
                    command = [sys.executable, "-c", TUTORIAL_RUN.format(repo=str(REPO), epochs=epochs)]
                else:
                    command = [sys.executable, "train_unet.py", "--data", "synthetic", "--epochs", str(epochs),
                               "--batch-size", "32", "--image-size", "128", "--repeat", "1",
                               "--output", str(Path(folder) / "run")]
                started = time.perf_counter()
                subprocess.run(command, cwd=REPO, check=True, capture_output=True)
                times[name].append(time.perf_counter() - started)
    baseline = statistics.median(next(iter(times.values())))
    return [[name, f"{statistics.median(runs):.1f}", " ".join(f"{t:.0f}" for t in runs),
             f"{statistics.median(runs) / baseline:.2f}"] for name, runs in times.items()]


def per_epoch_costs() -> list[list]:
    """Median seconds of each write the run folder makes after an epoch, for both scripts' default models at 128 px."""
    from inference import keras_predictor
    from rundir import RunDir, RunRecorder

    images = np.zeros((3, 128, 128, 3), np.uint8)
    masks = np.zeros((3, 128, 128, 1), np.uint8)
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.1 / e, "accuracy": 0.5, "val_accuracy": 0.5,
                "mean_iou": 0.3, "val_mean_iou": 0.3} for e in range(1, 21)]
    columns = []
    for module, build in ((train_unet, lambda: build_unet((128, 128, 3), 3)),
                          (train_mobilenet_unet, default_mobilenet_unet)):
        model = build()
        training.compile_phase(model, module.build_parser().parse_args(["--data", "synthetic"]), 1e-3, 100, 10,
                               data.OXFORD_CLASS_NAMES)
        predictor = keras_predictor(model)
        with tempfile.TemporaryDirectory() as folder:
            run = RunDir.create(Path(folder))
            recorder = RunRecorder(run, images, masks, predictor)
            recorder.set_model(model)
            actions = {
                "last.keras (model and optimizer state)": lambda: run.stage_model(model, "last.keras", 1),
                "best.keras (a link to last.keras)": lambda: run.stage_copy("last.keras", "best.keras", 1),
                "history.csv": lambda: run.write_history(history),
                "curves.png": lambda: recorder.curves.save(run.path / "curves.png", history),
                "the predicted masks of the 3 panel images": lambda: predictor(images),
                "predictions/epoch_NNN.png": lambda: recorder.panel.save(
                    run.path / "predictions" / "epoch_001.png", masks[..., 0], "epoch 1"),
                "a whole epoch's writes (RunRecorder.on_epoch_end)": lambda: recorder.on_epoch_end(0, history[0]),
            }
            times = {}
            for name, action in actions.items():
                action()
                repeats = []
                for _ in range(3):
                    started = time.perf_counter()
                    action()
                    repeats.append(time.perf_counter() - started)
                times[name] = statistics.median(repeats)
            size = (run.path / "last.keras").stat().st_size / 2**20
        columns.append((times, size))
    rows = [[name] + [f"{times[name]:.2f}" for times, _ in columns] for name in columns[0][0]]
    rows[0][1:] = [f"{times[rows[0][0]]:.2f} ({size:.0f} MB)" for times, size in columns]
    return rows


def first_steps(repeats: int) -> list[list]:
    """Seconds of a phase's first step (tracing included) and of a later one, for Keras' AdamW and the recipe's.

    Each phase is compiled as training.compile_phase does at the scripts' defaults (batch 16 at
    128 px); Keras' own AdamW is the same compile with the optimizer left as Keras makes it.
    The two alternate, each in a fresh model, `repeats` times; medians.
    """
    phases = (("U-Net", train_unet, lambda: build_unet((128, 128, 3), 3)),
              ("MobileNetV2 U-Net, frozen encoder", train_mobilenet_unet, default_mobilenet_unet),
              ("MobileNetV2 U-Net, fine-tuning", train_mobilenet_unet, lambda: default_mobilenet_unet(True)))
    rng = np.random.default_rng(0)
    x = rng.random((16, 128, 128, 3)).astype(np.float32)
    y = rng.integers(0, 3, (16, 128, 128, 1)).astype(np.int32)
    keep = recipe.with_one_learning_rate_a_step
    rows = []
    for name, module, build in phases:
        times = {"Keras' AdamW": ([], []), "recipe's AdamW": ([], [])}
        for _ in range(repeats):
            for optimizer, (firsts, laters) in times.items():
                recipe.with_one_learning_rate_a_step = keep if optimizer.startswith("recipe") else (lambda o: o)
                try:
                    model = build()
                    options = module.build_parser().parse_args(["--data", "synthetic"])
                    training.compile_phase(model, options, options.learning_rate, phase_steps=1000,
                                           steps_per_epoch=15, class_names=data.OXFORD_CLASS_NAMES)
                finally:
                    recipe.with_one_learning_rate_a_step = keep
                for times_of_step in (firsts, laters, laters):
                    started = time.perf_counter()
                    model.train_on_batch(x, y)
                    times_of_step.append(time.perf_counter() - started)
        variables = len(model.trainable_variables)
        for optimizer, (firsts, laters) in times.items():
            rows.append([f"{name} ({variables} variables)", optimizer, f"{statistics.median(firsts):.2f}",
                         f"{statistics.median(laters):.2f}"])
    return rows


def stem_steps(steps: int, warmup: int, repeats: int) -> list[list]:
    """Milliseconds a train step of the default MobileNetV2 U-Net takes at each stem stride, in each phase.

    The whole-run ratio of the defaults to the tutorial's recipe (BENCHMARKS.md, section 1) takes
    ten minutes of real photos to measure, and its margin under the issue's 1.5 depends on the
    machine; these steps take a minute and show where stride 1's extra time goes on the machine
    at hand. Each phase is compiled as training.compile_phase does at the scripts' defaults (batch
    16 at 128 px, random weights: the arithmetic is the same); the settings alternate `repeats`
    times, `steps` timed steps each, medians. The last two rows weigh the two phases' steps by the
    default epochs, against stride 2 throughout: stride 1 throughout, and the default 2,1 (stride 2's
    frozen steps, stride 1's fine-tuning ones). The steps are most of a run's time.
    """
    rng = np.random.default_rng(0)
    x = rng.random((16, 128, 128, 3)).astype(np.float32)
    y = rng.integers(0, 3, (16, 128, 128, 1)).astype(np.int32)
    defaults = train_mobilenet_unet.build_parser().parse_args(["--data", "synthetic"])
    frozen_phase, fine_tuning_phase = train_mobilenet_unet.build_phases(defaults)
    timed: dict[tuple[str, int], Callable[[], object]] = {}
    for stride in (2, 1):
        for phase, fine_tuning in (("frozen", False), ("fine-tuning", True)):
            model = default_mobilenet_unet(fine_tuning, stem_stride=stride)
            recipe_of = fine_tuning_phase if fine_tuning else frozen_phase  # the fine-tuning's two peaks
            training.compile_phase(model, defaults, recipe_of.learning_rate, phase_steps=1000, steps_per_epoch=15,
                                   class_names=data.OXFORD_CLASS_NAMES, own_rate=recipe_of.own_rate)
            timed[phase, stride] = lambda model=model: model.train_on_batch(x, y)
            if not fine_tuning:  # the encoder's forward pass alone, as the frozen phase runs it
                encoder = tf.function(lambda images, layer=model.get_layer("encoder"): layer(images, training=False))
                timed["encoder", stride] = lambda encoder=encoder: [output.numpy() for output in encoder(x)]
    times: dict[tuple[str, int], list[float]] = {key: [] for key in timed}
    for step in timed.values():
        for _ in range(warmup):
            step()
    for _ in range(repeats):
        for key, step in timed.items():
            for _ in range(steps):
                started = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - started)
    ms = {key: 1000 * statistics.median(runs) for key, runs in times.items()}
    rows = [[label, f"{ms[key, 2]:.0f}", f"{ms[key, 1]:.0f}", f"{ms[key, 1] / ms[key, 2]:.2f}"]
            for key, label in (("frozen", "a train step, frozen encoder"),
                               ("fine-tuning", "a train step, fine-tuning from " + train_mobilenet_unet.FINE_TUNE_FROM),
                               ("encoder", "the encoder's forward pass alone"))]
    epochs = {"frozen": defaults.epochs, "fine-tuning": defaults.fine_tune_epochs}
    weighed = {stride: sum(epochs[phase] * ms[phase, stride] for phase in epochs) for stride in (2, 1)}
    rows.append([f"{defaults.epochs} frozen + {defaults.fine_tune_epochs} fine-tuning epochs' steps, stride 1 "
                 "throughout (--stem-stride 1)", "", "", f"{weighed[1] / weighed[2]:.2f}"])
    switched = epochs["frozen"] * ms["frozen", 2] + epochs["fine-tuning"] * ms["fine-tuning", 1]
    rows.append([f"the same, stride 2 frozen then 1 (--stem-stride {train_mobilenet_unet.STRIDE_2_THEN_1}, "
                 "the default at 128 px)", "", "", f"{switched / weighed[2]:.2f}"])
    return rows


class EpochParts(keras.callbacks.Callback):
    """Each epoch's wall time split into its training steps, the validation after them and the run
    folder's writes after that. Keras calls the scripts' own callbacks (RunRecorder, TensorBoard)
    before those a benchmark adds, so this one's epoch ends after the writes."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.validating = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validated = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"steps": self.validating - self.began, "validation": self.validated - self.validating,
                            "writes": time.perf_counter() - self.validated})


def run_parts() -> tuple[list[list], list[list]] | None:
    """Where a default train_mobilenet_unet.py run's time goes: its steps, the validation and writes after
    each epoch, and the rest (start, the photos read, the model built, the final evaluation); then the
    first epoch of each phase against its later ones, which shows what tracing and caching cost.

    The step tables time steps alone; a whole run's ratio to the tutorial's (BENCHMARKS.md, section 1)
    also pays for the rest, which the tutorial's way mostly does not do. None without ../shared.
    """
    if not (SHARED_PETS.is_dir() and SHARED_WEIGHTS.is_file()):
        print(f"\n(the run table needs {SHARED_PETS} and {SHARED_WEIGHTS}: skipped)")
        return None
    parts = EpochParts()
    defaults = train_mobilenet_unet.build_parser().parse_args(["--data", str(SHARED_PETS)])
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        started = time.perf_counter()
        code = train_mobilenet_unet.main(["--data", str(SHARED_PETS), "--encoder-weights", str(SHARED_WEIGHTS),
                                          "--seed", "1", "--output", str(run)], callbacks=[parts])
        whole = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"the default run failed with exit status {code}")
        scored = json.loads((run / "metrics.json").read_text())["validation_examples"]
    phases = {"frozen": parts.epochs[:defaults.epochs], "fine-tuning": parts.epochs[defaults.epochs:]}

    def total(part: str, epochs: list[dict[str, float]]) -> float:
        return sum(epoch[part] for epoch in epochs)

    shares = [(f"training steps, the {len(epochs)} {phase} epochs", total("steps", epochs))
              for phase, epochs in phases.items()]
    shares += [(f"validation after each epoch ({scored} photos)", total("validation", parts.epochs)),
               ("the run folder's writes after each epoch (models, history, curves, panel, TensorBoard)",
                total("writes", parts.epochs))]
    shares.append(("the rest: start, photos read, model built, final evaluation", whole - sum(s for _, s in shares)))
    shares.append(("the whole run", whole))
    overall = [[name, f"{seconds:.1f}", f"{100 * seconds / whole:.0f}%"] for name, seconds in shares]
    by_epoch = []
    for phase, epochs in phases.items():
        for label, chosen in ((f"first {phase} epoch", epochs[:1]), (f"a later {phase} epoch (median)", epochs[1:])):
            by_epoch.append([label] + [f"{statistics.median(e[part] for e in chosen):.2f}"
                                       for part in ("steps", "validation", "writes")])
    return overall, by_epoch


def precision_steps(steps: int, warmup: int) -> list[list]:
    """Milliseconds of a training step in float32, float16 and bfloat16, each script's default model
    and batch at 128 px, compiled as the script compiles it; the ratio is against float32."""
    rng = np.random.default_rng(0)
    rows = []
    for name, module, build in (("MobileNetV2 U-Net, frozen encoder", train_mobilenet_unet, default_mobilenet_unet),
                                ("U-Net", train_unet, lambda: build_unet((128, 128, 3), 3))):
        options = module.build_parser().parse_args(["--data", "synthetic"])
        x = rng.random((options.batch_size, 128, 128, 3)).astype(np.float32)
        y = rng.integers(0, 3, (options.batch_size, 128, 128, 1)).astype(np.int32)
        float32 = None
        for mixed in (None, "float16", "bfloat16"):
            training.configure_precision(mixed)
            model = build()
            training.compile_phase(model, options, options.learning_rate, phase_steps=1000, steps_per_epoch=15,
                                   class_names=data.OXFORD_CLASS_NAMES)
            milliseconds = 1000 * options.batch_size / images_per_second(model, x, y, steps, warmup)
            float32 = float32 or milliseconds
            rows.append([name, mixed or "float32", f"{milliseconds:.0f}", f"{milliseconds / float32:.2f}"])
            keras.backend.clear_session()
    training.configure_precision(None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="whole runs of each kind (default: 3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each whole run (default: 2)")
    parser.add_argument("--tables", default=",".join(TABLES),
                        help=f"which tables, comma-separated, of {', '.join(TABLES)} (default: all)")
    args = parser.parse_args()
    tables = args.tables.split(",")
    if unknown := set(tables) - set(TABLES):
        parser.error(f"--tables: unknown {', '.join(sorted(unknown))}; use {', '.join(TABLES)}")
    print(f"\nmachine: {machine()}")
    if "throughput" in tables:
        throughput(args)
    if "whole" in tables:
        print_table(f"Whole runs, 6-level U-Net, synthetic set (512 training, 128 test images), {args.epochs} epochs, "
                    f"batch 32, 128 px, median of {args.repeats}",
                    ["run", "seconds", "all runs", "ratio"], whole_runs(args.epochs, args.repeats))
    if "writes" in tables:
        print_table("The run folder's writes after an epoch at 128 px, seconds, median of 3",
                    ["write", "U-Net", "MobileNetV2 U-Net"], per_epoch_costs())
    if "first" in tables:
        print_table(f"A phase's first train step (trace included) and a later one, batch 16 at 128 px, seconds, "
                    f"median of {args.repeats}", ["phase", "optimizer", "first step", "later step"],
                    first_steps(args.repeats))
    if "stem" in tables:
        print_table(f"The MobileNetV2 U-Net's first convolution at stride 2 and 1, batch 16 at 128 px, milliseconds, "
                    f"median of {args.repeats} x {args.steps} steps", ["step", "stride 2", "stride 1", "ratio"],
                    stem_steps(args.steps, args.warmup, args.repeats))
    if "precision" in tables:
        bfloat16 = {True: "has", False: "has no", None: "may have"}[training.cpu_has_bfloat16()]
        print_table(f"A training step under --mixed-precision, batch as each script's default at 128 px, milliseconds, "
                    f"median of {args.steps} (this CPU {bfloat16} bfloat16 instructions)",
                    ["model", "compute type", "ms a step", "ratio"], precision_steps(args.steps, args.warmup))
    if "run" in tables and (tables_of_run := run_parts()) is not None:
        overall, by_epoch = tables_of_run
        print_table("Where a default MobileNetV2 run's time goes, ../shared's 240 training photos at 128 px, seconds",
                    ["part", "seconds", "share"], overall)
        print_table("A phase's first epoch against its later ones, seconds",
                    ["epoch", "training steps", "validation", "writes"], by_epoch)


if __name__ == "__main__":
    main()
