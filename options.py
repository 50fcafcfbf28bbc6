"""The training scripts' command line: options in groups, their checks, and `--resume`.

`--resume DIR` re-parses the settings saved in DIR/config.json through the same parser, so
a resumed run gets the same types and checks as a new one. Beside it, only the options that
plan a longer run (`--epochs`, and `--fine-tune-epochs` for the MobileNetV2 script) may be
given; any other is refused by name, since changing it halfway would make a run that no
single command describes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import augment
import data
import inference
import losses
import recipe
from errors import UserError, user_errors
from models import mobilenet_unet
from rundir import RunDir

EXTENDABLE = ("epochs", "fine_tune_epochs")
# Options added after runs were saved, with the value that reproduces those runs: a config.json
# without one of them is re-parsed with that value on --resume, not with today's default.
BEFORE_THEY_EXISTED = {
    "repeat": 1,  # one pass an epoch
    "decoder_filters": mobilenet_unet.DECODER_FILTERS,  # pix2pix's decoder, the library's default
    "fuse_filters": mobilenet_unet.FUSE_FILTERS,
    "outline_weight": 1.0,  # every pixel alike
    "skips": "expansions",  # pix2pix's joins
    "stem_stride": "2",  # MobileNetV2's own first convolution
    "fine_tune_decoder_learning_rate": "same",  # the whole model at --fine-tune-learning-rate
}
# Settings whose saved form changed: config.json's old value, mapped to today's on --resume.
RENAMED_VALUES = {
    "mixed_precision": {True: "float16", False: None},  # it was an on/off switch for float16
}
PRECISIONS = ("float16", "bfloat16")
GROUPS = ("data", "model", "optimization", "devices", "output")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows defaults, without the "(default: None)" or "(default: False)"
    it appends to an option that is off unless given, or whose help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def base_parser(script: str, description: str, epochs_help: str = "training epochs",
                resume_help: str = "raise the planned count") -> argparse.ArgumentParser:
    """The options every training script shares, in groups; scripts add their model's own."""
    parser = argparse.ArgumentParser(
        prog=f"{script}.py", description=description, formatter_class=DefaultsHelpFormatter
    )
    parser.set_defaults(script=script)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    add = groups["data"].add_argument
    add("--data", default=data.TFDS_NAME, help=(
        f"'{data.TFDS_NAME}' (TensorFlow Datasets, downloaded on first use), 'synthetic' (generated "
        "shapes, for smoke runs), or a folder: the official Oxford-IIIT Pet archives unpacked "
        "(images/, annotations/), or your own images/ + masks/ (optionally under train/ and test/)"))
    add("--image-size", type=int, default=128, help="side of the square the images are resized to")
    add("--limit", type=int, default=None, help="use only the first N examples of each split (quick runs)")
    add_label_options(add, own_classes="3")
    add("--cache", choices=data.CACHES, default="memory", help=(
        "where resized examples are kept after the first epoch: memory (fastest), disk (a tf.data file "
        "cache, for data larger than memory; reused by --resume), none (read and resize every epoch)"))
    add("--cache-dir", default=None, metavar="DIR",
        help="folder of the disk cache (default: RUN/cache); a cache is only reused for the same files "
             "(names, sizes, times) and settings")
    add("--augment", type=augment.parse_augmentations, default=",".join(augment.DEFAULT),
        help="training augmentations, comma-separated, or 'none': " + "; ".join(
            f"{name}: {what}" for name, what in augment.AUGMENTATIONS.items()))
    add("--crop", type=int, default=None, metavar="PX", help=(
        "train on random PX x PX windows of the resized photos, copied pixel for pixel, while validation, "
        "the final evaluation and prediction take whole photos at --image-size: the model learns at the "
        "larger size's scale for the cost of the smaller (see BENCHMARKS.md). A multiple of the model's "
        "step (32 for the MobileNetV2 U-Net, 64 for the 6-level U-Net), at most --image-size"))

    add("--val-examples", type=parse_val_examples, default="auto", metavar="N|auto|all", help=(
        "test-split examples scored after each epoch (history, curves, best.keras), spread evenly over "
        "the split; the whole split is evaluated at the end. auto: a quarter as many as the training "
        "examples, at least 64, so validation stays a small part of each epoch; all: every one"))

    add = groups["optimization"].add_argument
    add("--epochs", type=int, default=20, help=f"{epochs_help} (with --resume: {resume_help})")
    add("--batch-size", type=int, default=recipe.DEFAULT_BATCH_SIZE, help=(
        "global batch size, split across devices; smaller batches give more steps per epoch, which "
        "a few hundred images need (see BENCHMARKS.md)"))
    add("--repeat", type=parse_repeat, default="auto", metavar="N|auto", help=(
        "passes over the training split in each epoch, each shuffled and augmented afresh: more steps "
        f"for small data; the schedule, validation and saves still go by epochs. auto: enough passes for "
        f"{AUTO_STEPS_PER_EPOCH} steps an epoch (2 for 240 photos in batches of 8; 1 from 400 photos)"))
    add("--learning-rate", type=float, default=recipe.DEFAULT_LEARNING_RATE, help="peak learning rate")
    add("--optimizer", choices=recipe.OPTIMIZERS, default=recipe.DEFAULT_OPTIMIZER,
        help="adamw: Adam with decoupled weight decay; adam: the tutorial's")
    add("--weight-decay", type=float, default=recipe.DEFAULT_WEIGHT_DECAY, help="AdamW's decoupled weight decay (adamw only)")
    add("--schedule", choices=recipe.SCHEDULES, default=recipe.DEFAULT_SCHEDULE,
        help="learning rate over each phase: cosine decay to zero, or constant (the tutorial's)")
    add("--warmup-epochs", type=float, default=recipe.DEFAULT_WARMUP_EPOCHS,
        help="linear warm-up from zero at the start of each phase, in epochs (fractions allowed; at most half "
             "of each phase)")
    add("--bn-momentum", type=float, default=recipe.DEFAULT_BN_MOMENTUM, help=(
        "momentum of the BatchNorm layers that train (Keras' default is 0.99); lower lets the moving "
        "statistics catch up with the weights within the first epochs on small data"))
    add("--loss", choices=losses.LOSS_NAMES, default="sce",
        help="sce: sparse categorical cross-entropy; dice, focal, sce+dice: for imbalanced classes")
    add("--class-weights", default=None,
        help="per-class weights as '2,2,1', or 'balanced' (inverse class frequency in the training "
        "masks); applied as a per-pixel sample-weight map (default: every class alike)")
    add("--outline-weight", type=float, default=recipe.DEFAULT_OUTLINE_WEIGHT, metavar="W", help=(
        f"weight in the loss of the pixels within {data.OUTLINE_REACH} px of another class in the "
        "(augmented) training masks, where most errors are; 1: every pixel alike. Multiplies "
        "--class-weights"))
    add("--seed", type=int, default=None, help="seed for weights, shuffling and augmentation; none: a new draw each run")
    add("--deterministic", action="store_true", help=(
        "TensorFlow's op determinism (with --seed): two runs on the same machine give identical history.csv; "
        "slower on GPUs"))

    add = groups["devices"].add_argument
    add("--jit-compile", choices=("auto", "on", "off"), default="auto", help=(
        "XLA compilation. auto: off on a CPU-only machine (measured with TensorFlow 2.21 on a 2-core "
        "CPU: XLA made a training step of these models 2 to 3.5 times slower, see BENCHMARKS.md), "
        "Keras' own choice when a GPU is present"))
    add("--mixed-precision", nargs="?", const="float16", default=None, choices=PRECISIONS, help=(
        "compute in a 16-bit type, variables, logits and loss staying float32. float16 (the value "
        "when none is given): for GPUs, slower on CPUs; bfloat16: for CPUs with bfloat16 "
        "instructions (AVX512_BF16, AMX) and recent GPUs; on a 2-core AVX512_BF16 CPU a default "
        "MobileNetV2 run took about 6%% less time for the same mean IoU (see BENCHMARKS.md) (default: "
        "float32 throughout)"))
    add("--strategy", choices=("auto", "mirrored", "multiworker"), default="auto", help=(
        "auto: MirroredStrategy when there are several GPUs, else one device; mirrored: all local "
        "GPUs (or CPUs if none); multiworker: MultiWorkerMirroredStrategy configured by TF_CONFIG"))

    add = groups["output"].add_argument
    add("--output", default=None, help="run folder to create (default: runs/<script>-<timestamp>)")
    add("--show", type=int, default=4, help="validation images drawn in predictions/epoch_NNN.png")
    add_tta_option(add, "of the final evaluation (metrics.json); training and validation take one pass")
    add("--resume", metavar="DIR", default=None, help=(
        "continue the run in DIR from its last finished epoch, with its settings; only --epochs "
        "(and --fine-tune-epochs) may be given beside it, to plan a longer run"))
    return parser


def word_or_count(*words: str, noun: str) -> Callable[[str], str | int]:
    """An argparse type: one of `words` (in any case), or a whole number of `noun` of at least 1."""
    choices = ", ".join(f"'{word}'" for word in words)

    def parse(text: str) -> str | int:
        word = str(text).strip().lower()
        if word in words:
            return word
        try:
            count = int(word)
        except ValueError:
            count = 0
        if count < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: use {choices} or a number of {noun} of at least 1")
        return count

    return parse


def widths(count: int | None = None, minimum: int = 1) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated layer widths of at least `minimum` (0: a block may be
    left out), exactly `count` of them if given."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in str(text).split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: widths must be " + ("positive" if minimum == 1 else f"{minimum} or more"))
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r}: give {count} widths, one per block")
        return values

    return parse


def comma_separated(values) -> str:
    """A list as the command line writes it (the inverse of `widths`): '384,192,96,48'."""
    return ",".join(map(str, values))


parse_val_examples = word_or_count("auto", "all", noun="examples")
parse_repeat = word_or_count("auto", noun="passes")
AUTO_STEPS_PER_EPOCH = 50


def training_passes(choice: str | int, train_count: int, batch_size: int) -> int:
    """Passes over the training split in each epoch, for `--repeat`.

    'auto' gives a small split enough steps to train from scratch: the 6-level U-Net on 240
    photos in batches of 8 (30 steps an epoch) scored 0.598 mean IoU in 20 epochs, and 0.624
    with two passes an epoch; at equal training time, level with the single pass for the first
    two minutes and ahead after (BENCHMARKS.md). 400 examples or more in batches of 8 get one pass.
    """
    if choice != "auto":
        return int(choice)
    return max(1, math.ceil(AUTO_STEPS_PER_EPOCH / math.ceil(train_count / batch_size)))


def validation_count(choice: str | int, train_count: int, test_count: int) -> int:
    """How many test examples to score after each epoch, for `--val-examples`.

    'auto' keeps validation under a tenth of an epoch's work: scoring an example costs about a
    third of training on one (a forward pass against forward and backward), so a quarter as
    many as the training examples; at least 64, so a small split is still scored well.
    """
    if choice == "all":
        wanted = test_count
    elif choice == "auto":
        wanted = max(64, math.ceil(train_count / 4))
    else:
        wanted = int(choice)
    return max(1, min(wanted, test_count))


def add_label_options(add, own_classes: str) -> None:
    """How masks are read, the same for training and evaluate.py; `own_classes`: the default for your own data."""
    add("--num-classes", type=int, default=None,
        help=f"classes in the masks (default: 21 for Pascal VOC, 3 for Oxford-IIIT Pet and synthetic, {own_classes} "
        "for your own)")
    add("--mask-offset", type=int, default=None,
        help="subtracted from stored mask values (default: 1 for Oxford-IIIT Pet trimaps, 0 otherwise)")
    holdout = 0.2
    add("--holdout-fraction", type=float, default=holdout,
        help=f"share of a flat images/ + masks/ folder held out as the test split (default: {holdout})")
    add("--ignore-class", type=int, default=None, metavar="VALUE", help=(
        "a stored mask value (before --mask-offset) whose pixels count in neither loss nor metrics: "
        "255 for Pascal VOC (its default), or 3 with --num-classes 2 to leave out Oxford's border"))


@contextlib.contextmanager
def option_value_errors() -> Iterator[None]:
    """A library's `data.OptionValueError` as a UserError naming the option its field came from
    (`holdout_fraction`: --holdout-fraction)."""
    try:
        yield
    except data.OptionValueError as error:
        raise UserError(f"--{error.field.replace('_', '-')} {error.text}") from error


def add_tta_option(add, what: str) -> None:
    """--tta, the same for training's final evaluation, evaluate.py and predict.py."""
    add("--tta", choices=inference.TEST_TIME_AUGMENTATIONS, default="flip", help=(
        f"test-time augmentation {what}. flip: each photo's logits averaged with its mirror image's "
        "(on the pets +0.005 mean IoU for the MobileNetV2 U-Net's defaults, +0.016 for the U-Net's, for twice "
        "the model's work); none: one pass"))


def add_size_option(add) -> None:
    """--size, the same for evaluate.py and predict.py."""
    add("--size", type=int, default=None, metavar="PX", help=(
        "resize photos to PX for the model instead of the size it was trained at; a .keras model is "
        "called at that size with the same weights (a multiple of 32 for the MobileNetV2 U-Net, of 64 for the "
        "U-Net). The MobileNetV2 U-Net's defaults, trained at 128, scored the same at 160 on held-out pets "
        "(their fine-tuned encoder already works at twice the resolution; BENCHMARKS.md) (default: the model's own)"))


def check_at_least_one(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Each of these options that is set (not None) is at least 1, or a UserError names it."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def load_model_option(args: argparse.Namespace) -> inference.Predictor:
    """--model as predict.py and evaluate.py serve it, at --size and with --tta; errors name the options."""
    with user_errors("--model" if args.size is None else f"--model {args.model} --size {args.size}"):
        return inference.with_test_time_augmentation(inference.load_predictor(args.model, args.size), args.tta)


def group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The parser's argument group of that title, for a script to add its model's options to."""
    return next(g for g in parser._action_groups if g.title == title)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options, or with --resume the run's saved settings re-parsed by `parser`."""
    given = given_options(parser, argv)
    args = parser.parse_args(argv)
    if args.resume is None:
        resolve_source_defaults(args)
        check_options(args)
        return args
    run_dir = Path(args.resume)
    extendable = [dest for dest in EXTENDABLE if dest in vars(args)]
    refused = sorted(given - {"resume", *extendable})
    if refused:
        allowed = " and ".join(option_name(parser, dest) for dest in extendable)
        raise UserError(f"--resume continues a run with its own settings; beside it only {allowed} may be given, "
                        f"not {', '.join(option_name(parser, dest) for dest in refused)}")
    saved = read_config(run_dir, args.script)
    saved.update(RunDir(run_dir).planned_epochs())  # an earlier --resume's longer plan
    for dest, value in BEFORE_THEY_EXISTED.items():
        saved.setdefault(dest, value)
    for dest, renamed in RENAMED_VALUES.items():
        if isinstance(saved.get(dest), bool):
            saved[dest] = renamed[saved[dest]]
    argv_again = settings_to_argv(parser, saved)
    for dest in sorted(given & set(extendable)):
        argv_again += [option_name(parser, dest), str(getattr(args, dest))]
    resumed = parser.parse_args(argv_again)
    resumed.resume = str(run_dir)
    resumed.output = str(run_dir)
    resolve_source_defaults(resumed)
    check_options(resumed)
    for dest in extendable:
        if resumed.__dict__[dest] < saved.get(dest, 0):
            raise UserError(f"{option_name(parser, dest)} {resumed.__dict__[dest]} is below the {saved[dest]} "
                            f"planned for the run in {run_dir}; it can only be raised")
    check_first_phase_not_past(run_dir, saved, resumed)
    return resumed


def check_first_phase_not_past(run_dir: Path, saved: dict, resumed: argparse.Namespace) -> None:
    """A run that has fine-tuned keeps its count of frozen epochs.

    Raised after the fine-tuning began, --epochs would move the phases' boundary past epochs
    already fine-tuned: the history would count them as frozen ones, and the fine-tuning
    schedule would lose its place, a run that no single command describes.
    """
    if "fine_tune_epochs" not in vars(resumed) or resumed.epochs == saved["epochs"]:
        return
    completed = RunDir(run_dir).completed_epochs()
    if completed > saved["epochs"]:
        raise UserError(
            f"--epochs {resumed.epochs}: the run in {run_dir} finished its {saved['epochs']} epochs on the frozen "
            f"encoder and has fine-tuned for {completed - saved['epochs']}; only --fine-tune-epochs can be raised now")


def read_config(run_dir: Path, script: str) -> dict:
    config_file, state_file = run_dir / "config.json", run_dir / "state.json"
    no_run = UserError(f"--resume {run_dir}: that folder holds no run to resume (no config.json, state.json and last.keras)")
    if not config_file.is_file() or not state_file.is_file():
        raise no_run
    with user_errors(f"--resume {run_dir}: {state_file} does not count the finished epochs",
                     (json.JSONDecodeError, KeyError, TypeError, ValueError)):
        completed = RunDir(run_dir).completed_epochs()
    if completed > 0 and not RunDir(run_dir).committed_file("last.keras").is_file():  # none before the first epoch
        raise no_run
    with user_errors(f"--resume {run_dir}: {config_file} is not valid JSON", (json.JSONDecodeError,)):
        saved = json.loads(config_file.read_text())
    if saved.get("script") != script:
        raise UserError(f"--resume {run_dir}: that run was made by {saved.get('script')}.py, not {script}.py")
    return saved


_UNSET = object()


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options written on the command line (abbreviations included).

    argparse leaves an attribute that is already on the namespace alone unless its option
    is given, so pre-filling every destination with a marker reveals which ones were.
    """
    namespace = argparse.Namespace(**{action.dest: _UNSET for action in parser._actions})
    parsed = parser.parse_args(argv, namespace=namespace)
    return {action.dest for action in parser._actions
            if action.dest != "help" and getattr(parsed, action.dest, _UNSET) is not _UNSET}


def settings_to_argv(parser: argparse.ArgumentParser, saved: dict) -> list[str]:
    """The command-line words that reproduce saved settings, for the parser to check again."""
    words: list[str] = []
    for action in parser._actions:
        if action.dest in ("help", "resume", "output") or action.dest not in saved or not action.option_strings:
            continue
        value = saved[action.dest]
        if isinstance(action, argparse._StoreTrueAction):
            words += [action.option_strings[-1]] if value else []
        elif value is not None:
            if isinstance(value, (list, tuple)):
                text = comma_separated(value) if value else "none"
            else:
                text = str(value)
            words += [action.option_strings[-1], text]
    return words


def option_name(parser: argparse.ArgumentParser, dest: str) -> str:
    return next(action.option_strings[-1] for action in parser._actions if action.dest == dest)


def resolve_source_defaults(args: argparse.Namespace) -> None:
    """Fills --num-classes and --ignore-class from what the data source implies, once, for config.json."""
    defaults = data.source_defaults(args.data)
    if args.num_classes is None:
        args.num_classes = defaults["num_classes"]
    if args.ignore_class is None:
        args.ignore_class = defaults["ignore_class"]


def check_options(args: argparse.Namespace) -> None:
    """Numbers argparse's types cannot check on their own, each named in its message."""
    check_at_least_one(args, ("image_size", "batch_size", "num_classes", "show", "epochs", "limit", "crop"))
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be from 0 to 2**32 - 1, got {args.seed}")
    if args.crop is not None and args.crop > args.image_size:
        raise UserError(f"--crop {args.crop} is larger than --image-size {args.image_size}: a training window "
                        "is a part of the resized photo")
    for name in ("learning_rate", "outline_weight"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("weight_decay", "warmup_epochs"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.deterministic and args.seed is None:
        raise UserError("--deterministic needs --seed: without a seed every run draws new weights")
    if not 0.0 <= args.bn_momentum < 1.0:
        raise UserError(f"--bn-momentum must be in [0, 1), got {args.bn_momentum}")
    with user_errors(), option_value_errors():
        options = data_options(args)
    with user_errors(f"--ignore-class {args.ignore_class}"):
        options.labels(oxford=data.is_oxford(args.data))


def data_options(args: argparse.Namespace) -> data.DataOptions:
    """The data options of a training run, built in this one place from the command line."""
    cache_dir = (args.cache_dir or os.path.join(args.output or "", "cache")) if args.cache == "disk" else None
    return data.DataOptions(image_size=args.image_size, limit=args.limit, num_classes=args.num_classes,
                            mask_offset=args.mask_offset, holdout_fraction=args.holdout_fraction,
                            ignore_class=args.ignore_class, cache=args.cache, cache_dir=cache_dir)
