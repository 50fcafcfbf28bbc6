"""Export a trained model as TFLite or SavedModel, and check the export against the Keras model.

Example: python export.py --model runs/RUN/best.keras --quantize float16 --output pets.tflite

The format follows --output's name unless --format says otherwise: a .tflite file, or a SavedModel
folder for a name with no suffix.

Both formats take uint8 RGB images and return {"mask": uint8 class indices, "logits": float32},
with normalization and argmax inside, so a caller needs no Python preprocessing:
  * SavedModel, signature "serving_default": a batch of any height and width, resized inside
    (bilinear, antialiased, as in training) to the model's input size;
  * TFLite, signature "serve": one image of the model's input size, shape (1, S, S, 3) — the
    fixed shape mobile runtimes handle best; resize camera frames to S x S before calling.
Before it declares success the export is run on a few images and its masks compared with
the Keras model's: float exports must agree on at least 99% of pixels, or nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from errors import interrupt_quietly_while_starting  # noqa: E402  (light: no TensorFlow)

if __name__ == "__main__":  # run as a script, not imported by the tests
    interrupt_quietly_while_starting()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
from errors import UserError, run_cli, user_errors  # noqa: E402
from files import atomic_path  # noqa: E402
from inference import load_keras_model, resize_image, tflite_runner, to_model_input  # noqa: E402

FORMATS = ("tflite", "saved_model")
QUANTIZATIONS = ("none", "float16", "dynamic")
REQUIRED_AGREEMENT = 0.99
CHECK_IMAGES = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model (.keras), e.g. RUN_DIR/best.keras")
    parser.add_argument("--format", choices=FORMATS,
                        help="tflite (a .tflite file) or saved_model (a folder) (default: from --output's name: "
                        "tflite for NAME.tflite, saved_model for a name with no suffix)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                        help="TFLite only: float16 halves the file, dynamic stores weights as int8 (default: none)")
    parser.add_argument("--output", required=True, help="the .tflite file or SavedModel folder to create")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output of the same format (default: refuse)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    args.format = export_format(output, args.format)
    if args.format == "saved_model" and args.quantize != "none":
        raise UserError("--quantize applies to TFLite exports only (--format tflite, or --output NAME.tflite)")
    check_output(output, args.overwrite, args.format)
    with user_errors("--model"):
        model = load_keras_model(args.model)
    images = check_images(model.input_shape[1])
    expected = keras_masks(model, images)

    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        saved_model = Path(scratch) / "saved_model"
        served = model if args.format == "saved_model" else computing_in_float32(model)
        write_saved_model(served, saved_model, dynamic=args.format == "saved_model")
        if args.format == "saved_model":
            got = run_saved_model(saved_model, images)
            size = sum(f.stat().st_size for f in saved_model.rglob("*") if f.is_file())
        else:
            flatbuffer = convert_to_tflite(saved_model, args.quantize)
            got = run_tflite(flatbuffer, images)
            size = len(flatbuffer)
        agreement = float(np.mean(got == expected))
        print(f"{args.format} ({args.quantize}): {size / 2**20:.1f} MiB; mask agreement with the Keras model "
              f"on {len(images)} images: {agreement:.2%}")
        if args.quantize == "none" and agreement < REQUIRED_AGREEMENT:
            print(f"error: the export agrees on only {agreement:.2%} of pixels (at least {REQUIRED_AGREEMENT:.0%} "
                  "required); nothing was written", file=sys.stderr)
            return 1
        if args.format == "saved_model":
            replace_folder(saved_model, output, aside=Path(scratch) / "replaced")
        else:
            with atomic_path(output) as temporary:
                temporary.write_bytes(flatbuffer)
    print(f"wrote {output}")
    return 0


def export_format(output: Path, given: str | None) -> str:
    """--format as given, or as --output's name says: NAME.tflite a TFLite file, a name with no suffix a folder."""
    if given is not None:
        return given
    if output.suffix.lower() == ".tflite":
        return "tflite"
    if not output.suffix:
        return "saved_model"
    raise UserError(f"--output {output}: its name does not say the format (NAME.tflite for TFLite, a name "
                    "with no suffix for a SavedModel folder); give --format tflite or --format saved_model")


def check_output(output: Path, overwrite: bool, kind: str) -> None:
    """Refuses, before any work, an output that exists (unless --overwrite), or that --overwrite must not replace.

    A SavedModel replaces only a folder holding an earlier one (its saved_model.pb): --output
    naming any other folder by mistake must not cost the user its contents.
    """
    if output.exists():
        if not overwrite:
            raise UserError(f"--output {output} already exists; pass --overwrite to replace it")
        if kind == "tflite" and output.is_dir():
            raise UserError(f"--output {output} is a folder; a TFLite export is one file (name it NAME.tflite)")
        if kind == "saved_model" and not output.is_dir():
            raise UserError(f"--output {output} is a file; a SavedModel export is a folder")
        if kind == "saved_model" and not (output / "saved_model.pb").is_file():
            raise UserError(f"--output {output} is a folder that holds no SavedModel (no saved_model.pb); "
                            "--overwrite replaces only an earlier export")
    parent = output.parent  # "." for a bare name
    if not parent.is_dir():
        raise UserError(f"--output {output}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--output {output}: the folder {parent} is not writable")


def replace_folder(new: Path, output: Path, aside: Path) -> None:
    """Moves the folder `new` to `output`; an earlier export there is moved to `aside` first, and back if the move fails.

    POSIX renames a folder only onto an empty one, so unlike a file's os.replace this takes
    two renames; the earlier export is never deleted before the new one is in place.
    """
    if output.exists():
        os.replace(output, aside)
        try:
            os.replace(new, output)
        except BaseException:
            os.replace(aside, output)
            raise
    else:
        os.replace(new, output)


def check_images(size: int) -> np.ndarray:
    """A few synthetic test images at the model's input size, as uint8."""
    return np.stack([data.synthetic_example(i, "test", size, size)[0] for i in range(CHECK_IMAGES)])


def keras_masks(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.argmax(model.predict(to_model_input(images), verbose=0), axis=-1).astype(np.uint8)


# --------------------------------------------------------------------------- exporting


def computing_in_float32(model: keras.Model) -> keras.Model:
    """The model with every layer computing in float32 and the same weights; the model itself if it already does.

    A model trained with --mixed-precision keeps its layers' 16-bit policies in the .keras
    file, and TFLite's converter has no kernels for bfloat16 (nor float16 outside --quantize
    float16): it failed on every convolution. Under mixed precision the variables are float32,
    so the copy holds exactly the trained weights; its masks are still checked against the
    model's own, as for any export.
    """
    if all(policy == "float32" for policy in _policies(model)):
        return model

    def in_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _policies(layer: keras.layers.Layer) -> Iterator[str]:
    yield layer.dtype_policy.name
    for inner in getattr(layer, "layers", []):
        yield from _policies(inner)


def serving_function(model: keras.Model, *, dynamic: bool) -> tuple[Callable, tf.TensorSpec]:
    """uint8 images -> {"mask", "logits"}, with the training pipeline's preprocessing inside."""
    size = model.input_shape[1]
    spec = tf.TensorSpec((None, None, None, 3) if dynamic else (1, size, size, 3), tf.uint8, name="images")

    def serve(images):
        if dynamic:
            images = resize_image(images, size)
        logits = model(to_model_input(images), training=False)
        return {"mask": tf.cast(tf.argmax(logits, axis=-1), tf.uint8), "logits": logits}

    return serve, spec


def write_saved_model(model: keras.Model, path: Path, *, dynamic: bool) -> None:
    serve, spec = serving_function(model, dynamic=dynamic)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[spec])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        archive.write_out(str(path), verbose=False)


def convert_to_tflite(saved_model: Path, quantize: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serve"])
    if quantize in ("float16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


# --------------------------------------------------------------------------- running exports


def run_saved_model(path: Path, images: np.ndarray) -> np.ndarray:
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return serve(images=tf.constant(images))["mask"].numpy()


def run_tflite(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    _, _, run = tflite_runner(flatbuffer)
    return np.concatenate([run(image[None])["mask"] for image in images])


if __name__ == "__main__":
    sys.exit(run_cli(main))
