"""Quality per training minute on real photos: the tutorial's recipe against the project's defaults.

Trains on ../shared/data/oxford-pets-300 (240 training photos) and scores every run on its
60 validation photos at each photo's own size (logits resized back, as predict.py does),
after every epoch, with one pass of the model as the tutorial predicts. The scoring is not
counted in the times. "as the script reports it" is the run's own final figure in
metrics.json: at each photo's own size too, with the scripts' default test-time
augmentation (--tta flip: each photo's logits averaged with its mirror image's).

  * tutorial: the TensorFlow tutorial's way: images and masks resized bilinearly (masks
    truncated to labels by the loss), flips, batch 64, constant Adam at 1e-3, no validation;
    the MobileNetV2 encoder is fed [0, 1] as in the tutorial, the U-Net is the project's;
  * defaults: the training script with no recipe options;
  * the variants: the defaults with one change undone, to show what each is worth, or with
    other settings (photos at 160 or 192 px, trained on smaller windows: --crop); a run's
    photos are scored at its own --image-size.

Times are whole runs (data loading and the final evaluation included) on this machine; the
ratio is to the tutorial run of the same model. Runs share one process: later runs in a long
process slowed down (its memory grew to 5 GB), so compare times across processes only for
the first runs, or run one model at a time. "to tutorial" is the training time after
which the run's mean IoU first reaches the tutorial run's final one.

`--fold K` trains and scores on another split of the same photos (5-fold cross-validation):
fold 0 is the folder's own split; folds 1 to 4 each hold out a quarter of its training photos
(every fourth photo of each breed, by number) and train on the rest, its validation photos
included. The spread over the folds shows how far one held-out set's figure can be trusted.

    python bench/quality.py [--models mobilenet,unet] [--variants [TEXT]] [--epochs 20] [--seed 1] [--data DIR]
                            [--fold K] [--encoder-weights PATH|imagenet]

The MobileNetV2 runs start from ../shared/weights' checkpoint trained at 224 px. With internet,
`--encoder-weights imagenet` measures what the scripts' default gives: Keras then fetches the
checkpoint trained at the model's own size (128 px here).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from _common import SHARED_PETS, SHARED_WEIGHTS, machine, print_table

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

import data  # noqa: E402
import evaluation  # noqa: E402
import train_mobilenet_unet  # noqa: E402
import train_unet  # noqa: E402
from inference import keras_predictor  # noqa: E402
from models import build_unet  # noqa: E402
from models.blocks import upsample  # noqa: E402
from models.mobilenet_unet import DECODER_FILTERS, build_encoder  # noqa: E402

SIZE = 128
VARIANTS = {  # each undoes one part of the default recipe
    "defaults, validating on every test photo each epoch": ["--val-examples", "all"],
    "defaults, BatchNorm momentum 0.99": ["--bn-momentum", "0.99"],
    "defaults, batch 64 (the tutorial's)": ["--batch-size", "64"],
    "defaults, constant Adam (no AdamW, cosine, warm-up)": ["--optimizer", "adam", "--schedule", "constant",
                                                            "--warmup-epochs", "0"],
    "defaults, every pixel alike (outline weight 1)": ["--outline-weight", "1"],
    "defaults, flips only (no scale, colour)": ["--augment", "flip"],
}
VARIANTS_BY_MODEL = {  # the defaults differ: these undo or add what the other model's recipe does
    "mobilenet": {"defaults, frozen throughout (no fine-tuning)": ["--fine-tune-epochs", "0"],
                  "defaults, fine-tuning every encoder layer": ["--fine-tune-from", "all"],
                  "defaults, fine-tuning from block 13": ["--fine-tune-from", "block_13_expand"],
                  "defaults, fine-tuning peak 1e-4": ["--fine-tune-learning-rate", "1e-4"],
                  "defaults, the decoder fine-tuned at the encoder's peak (--fine-tune-decoder-learning-rate same)": [
                      "--fine-tune-decoder-learning-rate", "same"],
                  "defaults, pix2pix's decoder widths (512, 256, 128, 64)": ["--decoder-filters", "512,256,128,64"],
                  "defaults, half-width decoder": ["--decoder-filters", "256,128,64,32"],
                  "defaults, pix2pix's joins (no fuse convolution)": ["--fuse-filters", "0,0,0,0"],
                  "defaults joining the encoder's block outputs (--skips outputs)": ["--skips", "outputs"],
                  "defaults, MobileNetV2's strided first convolution throughout (--stem-stride 2)": ["--stem-stride", "2"],
                  "defaults, the first convolution unstrided in the frozen epochs too (--stem-stride 1)": [
                      "--stem-stride", "1"],
                  "defaults at 160 px, trained on 128 px windows": ["--image-size", "160", "--crop", "128"],
                  "defaults at 192 px, trained on 160 px windows, half-width decoder": [
                      "--image-size", "192", "--crop", "160", "--decoder-filters", "256,128,64,32"]},
    "unet": {"defaults, one pass an epoch (--repeat 1)": ["--repeat", "1"],
             "defaults at 192 px, trained on 128 px windows": ["--image-size", "192", "--crop", "128"]},
}


FOLDS = 5


def fold_folder(source: Path, fold: int, into: Path) -> Path:
    """An archive folder in `into` holding out the photos of `fold`; images and trimaps are links.

    Fold 0 is `source` itself, returned as it is. The other folds split its training photos:
    each breed's photos in order of their number, every (FOLDS - 1)-th to the same fold.
    """
    if fold not in range(FOLDS):
        raise ValueError(f"fold {fold} is not one of 0 to {FOLDS - 1}")
    if fold == 0:
        return source
    annotations = source / "annotations"
    listed = (annotations / "list.txt").read_text().splitlines()
    by_breed = collections.defaultdict(list)
    for line in (annotations / "trainval.txt").read_text().splitlines():
        breed, number = line.split()[0].rsplit("_", 1)
        by_breed[breed].append((int(number), line))
    held_out = {line for lines in by_breed.values()
                for index, (_, line) in enumerate(sorted(lines)) if index % (FOLDS - 1) == fold - 1}
    folder = into / f"{source.name}-fold{fold}"
    (folder / "annotations").mkdir(parents=True)
    os.symlink((source / "images").resolve(), folder / "images")
    os.symlink((annotations / "trimaps").resolve(), folder / "annotations" / "trimaps")
    (folder / "annotations" / "list.txt").write_text("\n".join(listed) + "\n")
    for name, lines in [("trainval.txt", [line for line in listed if line not in held_out]),
                        ("test.txt", [line for line in listed if line in held_out])]:
        (folder / "annotations" / name).write_text("\n".join(lines) + "\n")
    return folder


class EpochScores(keras.callbacks.Callback):
    """After each epoch: mean IoU at each photo's own size, and the training time so far.

    `photos(size)`: the validation photos as the model's size sees them (runs may change it).
    """

    def __init__(self, photos: Callable[[int], list[data.Photo]], started: float):
        super().__init__()
        self.photos, self.started, self.scoring, self.rows = photos, started, 0.0, []
        self.predictor, self.predicting = None, None

    def on_epoch_end(self, epoch, logs=None):
        begun = time.perf_counter()
        if self.predicting is not self.model:  # one trace a model: its weights are variables it reads
            self.predictor, self.predicting = keras_predictor(self.model), self.model
        figures = evaluation.evaluate(self.predictor, self.photos(self.model.input_shape[1]),
                                      list(data.OXFORD_CLASS_NAMES))
        self.rows.append({"epoch": epoch + 1, "seconds": begun - self.started - self.scoring,
                          **figures.figures()["original_size"]})
        self.scoring += time.perf_counter() - begun


# --------------------------------------------------------------------------- the tutorial's recipe


def tutorial_dataset(folder: Path, seed: int) -> tf.data.Dataset:
    """The tutorial's pipeline on the archive folder: bilinear masks, flips by two seeded layers."""
    pairs = data._oxford_pairs(folder, "train")

    def load(image_path, mask_path):
        image = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3), (SIZE, SIZE))
        mask = tf.image.resize(tf.io.decode_png(tf.io.read_file(mask_path), channels=1), (SIZE, SIZE))
        return image / 255.0, mask - 1.0

    flip_images = layers.RandomFlip("horizontal", seed=42)
    flip_masks = layers.RandomFlip("horizontal", seed=42)
    ds = tf.data.Dataset.from_tensor_slices(([str(p.image) for p in pairs], [str(p.mask) for p in pairs]))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache().shuffle(1000, seed=seed).batch(64)
    return ds.map(lambda x, y: (flip_images(x), flip_masks(y))).prefetch(tf.data.AUTOTUNE)


def tutorial_mobilenet(weights: str) -> keras.Model:
    """The tutorial's model: the encoder fed [0, 1] straight, no rescaling to MobileNetV2's [-1, 1]."""
    encoder = build_encoder((SIZE, SIZE, 3), weights)
    encoder.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    *skips, x = encoder(inputs)
    for filters, skip in zip(DECODER_FILTERS, reversed(skips)):
        x = layers.Concatenate()([upsample(filters, 3)(x), skip])
    return keras.Model(inputs, layers.Conv2DTranspose(3, 3, strides=2, padding="same")(x))


def run_tutorial(model_name: str, folder: Path, epochs: int, seed: int,
                 photos: Callable[[int], list[data.Photo]], weights: str = str(SHARED_WEIGHTS)) -> dict:
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = tutorial_mobilenet(weights) if model_name == "mobilenet" else build_unet((SIZE, SIZE, 3), 3)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    scores = EpochScores(photos, started)
    model.fit(tutorial_dataset(folder, seed), epochs=epochs, callbacks=[scores], verbose=0)
    return {"rows": scores.rows, "seconds": time.perf_counter() - started - scores.scoring}


# --------------------------------------------------------------------------- the project's scripts


def script_arguments(model_name: str, source: Path, extra: list[str], epochs: int, seed: int, output: Path,
                     weights: str = str(SHARED_WEIGHTS)) -> list[str]:
    """The training script's command line for a run of `epochs` in all, fine-tuning ones among them."""
    frozen = epochs
    if model_name == "mobilenet":
        fine_tuning = (int(extra[extra.index("--fine-tune-epochs") + 1]) if "--fine-tune-epochs" in extra
                       else train_mobilenet_unet.FINE_TUNE_EPOCHS)
        frozen = epochs - fine_tuning
    argv = ["--data", str(source), "--image-size", str(SIZE), "--epochs", str(frozen), "--seed", str(seed),
            "--output", str(output), *extra]
    if model_name == "mobilenet":
        argv += ["--encoder-weights", weights]
    return argv


def run_script(model_name: str, source: Path, extra: list[str], epochs: int, seed: int,
               photos: Callable[[int], list[data.Photo]], weights: str = str(SHARED_WEIGHTS)) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        module = train_mobilenet_unet if model_name == "mobilenet" else train_unet
        argv = script_arguments(model_name, source, extra, epochs, seed, Path(folder) / "run", weights)
        started = time.perf_counter()
        scores = EpochScores(photos, started)
        with contextlib.redirect_stdout(io.StringIO()):
            assert module.main(argv, callbacks=[scores]) == 0
        seconds = time.perf_counter() - started - scores.scoring
        final = json.loads((Path(folder) / "run" / "metrics.json").read_text())["test"]["original_size"]
    return {"rows": scores.rows, "seconds": seconds, "final": final}


def summary(name: str, model_name: str, result: dict, tutorial: dict | None) -> list:
    last = result["rows"][-1]
    target = (tutorial or result)["rows"][-1]["mean_iou"]
    reached = next((row["seconds"] for row in result["rows"] if row["mean_iou"] >= target), None)
    ious = last["iou_per_class"]
    ratio = result["seconds"] / tutorial["seconds"] if tutorial else 1.0
    reported = round(result["final"]["mean_iou"], 3) if "final" in result else "-"
    return [model_name, name, round(last["mean_iou"], 3), reported, round(last["accuracy"], 3),
            " / ".join(f"{ious[c]:.2f}" for c in data.OXFORD_CLASS_NAMES), f"{result['seconds']:.0f}",
            f"{ratio:.2f}", "-" if reached is None else f"{reached:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet,unet", help="mobilenet, unet or both (default: both)")
    parser.add_argument("--variants", nargs="?", const="", default=None, metavar="TEXT",
                        help="also run the defaults with one change undone each (only those whose name holds TEXT)")
    parser.add_argument("--data", type=Path, default=SHARED_PETS,
                        help=f"an Oxford-IIIT Pet archive folder to train and score on (default: {SHARED_PETS})")
    parser.add_argument("--epochs", type=int, default=20, help="default: 20")
    parser.add_argument("--seed", type=int, default=1, help="default: 1")
    parser.add_argument("--fold", type=int, default=0, choices=range(FOLDS),
                        help=f"the split of --data's photos to train and score on, 0 to {FOLDS - 1} (default: 0, "
                        "the folder's own)")
    parser.add_argument("--encoder-weights", default=str(SHARED_WEIGHTS), metavar="PATH|imagenet",
                        help="the MobileNetV2 runs' encoder, the tutorial's included: a no-top weights file, or "
                        "'imagenet' for the checkpoint Keras fetches for the model's size, as the scripts' "
                        f"default does (default: {SHARED_WEIGHTS})")
    parser.add_argument("--json", default=None, help="also write every epoch's scores to this file")
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"needs {args.data}")
    if "mobilenet" in args.models and args.encoder_weights != "imagenet" and not Path(args.encoder_weights).is_file():
        raise SystemExit(f"needs {args.encoder_weights} (or --encoder-weights imagenet, with internet)")
    with tempfile.TemporaryDirectory() as folds:
        args.data = fold_folder(args.data, args.fold, Path(folds))
        compare(args)


def compare(args: argparse.Namespace) -> None:
    photos = functools.cache(lambda size: list(data.photos(args.data, "test", data.DataOptions(image_size=size))[1]))
    rows, everything = [], {}
    for model_name in args.models.split(","):
        tutorial = run_tutorial(model_name, args.data, args.epochs, args.seed, photos, args.encoder_weights)
        everything[f"{model_name}: tutorial"] = tutorial
        rows.append(summary("tutorial recipe", model_name, tutorial, None))
        runs = {"defaults": []}
        if args.variants is not None:
            runs.update({name: extra for name, extra in {**VARIANTS, **VARIANTS_BY_MODEL[model_name]}.items()
                         if args.variants in name})
        for name, extra in runs.items():
            result = run_script(model_name, args.data, extra, args.epochs, args.seed, photos, args.encoder_weights)
            everything[f"{model_name}: {name}"] = result
            rows.append(summary(name, model_name, result, tutorial))
            print(rows[-1], flush=True)
    print(f"\nmachine: {machine()}")
    if "mobilenet" in args.models:
        print(f"MobileNetV2 encoder weights: {args.encoder_weights}")
    print_table(f"Quality on {len(photos(SIZE))} validation photos of {args.data.name} at each photo's own size, "
                f"{args.epochs} epochs at {SIZE} px, seed {args.seed}",
                ["model", "recipe", "mean IoU", "as the script reports it", "pixel accuracy",
                 "IoU pet / background / border", "seconds", "time ratio", "s to tutorial's IoU"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1, default=float))


if __name__ == "__main__":
    main()
