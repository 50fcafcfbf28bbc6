"""Segment every image in a folder with a trained model, at each image's own resolution.

Example: python predict.py --model runs/RUN/best.keras --input photos/ --output masks/

For each image NAME.EXT it writes NAME_mask.png (the class index of each pixel, 8-bit, at
the image's width and height) and NAME_overlay.png (the photo with the classes blended
over it, in the palette of visualize.py: class 0 orange, 1 blue, 2 yellow, 3 green, 4 purple,
5 red, 6 teal, 7 grey). Exit status: 0 when every image was written, 1 when some were
skipped (each is named with its reason), 2 for a problem that stops the run.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import os
import warnings
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402

import losses  # noqa: E402,F401  (registers the custom losses a saved model may name)
from data import IMAGE_EXTENSIONS  # noqa: E402
from errors import UserError, first_line, run_cli  # noqa: E402
from files import atomic_path  # noqa: E402
from visualize import overlay  # noqa: E402

Image.MAX_IMAGE_PIXELS = 400_000_000  # large camera and scanner images are legitimate input
WHOLE_IMAGE_PIXELS = 4_000_000  # up to this size, logits are resized in one TensorFlow op
BAND_ROWS = 256  # beyond it, rows of full-resolution logits held at once: bounds memory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True,
                        help="a trained model: .keras (e.g. RUN_DIR/best.keras) or a .tflite made by export.py")
    parser.add_argument("--input", required=True, help="folder of images (JPEG, PNG, BMP, GIF; any letter case)")
    parser.add_argument("--output", required=True, help="folder for the masks and overlays (created if needed)")
    parser.add_argument("--recursive", action="store_true",
                        help="also segment images in sub-folders, mirroring them under --output (default: off)")
    parser.add_argument("--batch-size", type=int, default=32, help="images predicted together (default: 32)")
    parser.add_argument("--no-overlay", action="store_true", help="write only the masks, no overlays (default: off)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that already exist (default: refuse to run)")
    parser.add_argument("--write-into-input", action="store_true",
                        help="allow --output to be the input folder or inside it (default: refused)")
    return parser


@dataclass
class Job:
    source: Path
    mask_path: Path
    overlay_path: Path | None


@dataclass
class Summary:
    written: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- the job


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    size, predict_logits = load_predictor(args.model)
    jobs = plan_jobs(Path(args.input), Path(args.output), recursive=args.recursive,
                     overlay=not args.no_overlay, overwrite=args.overwrite, into_input=args.write_into_input)
    summary = segment(size, predict_logits, jobs, batch_size=args.batch_size)
    print_summary(summary)
    return 1 if summary.skipped else 0


def load_predictor(path: str | os.PathLike) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """(the model's square input size, a function from a uint8 image batch to logits).

    Takes a Keras model (.keras) or a TFLite model made by export.py (.tflite).
    """
    if Path(path).suffix.lower() == ".tflite":
        return _tflite_predictor(path)
    model = load_model(path)
    size = model.input_shape[1]
    if size is None or model.input_shape[2] != size:
        raise UserError(f"--model {path} takes input of shape {model.input_shape[1:]}: a square size is needed")
    predict = tf.function(lambda x: model(tf.cast(x, tf.float32) / 255.0, training=False),
                          input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
    return size, lambda images: predict(images).numpy()


def _tflite_predictor(path: str | os.PathLike) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    if not Path(path).is_file():
        raise UserError(f"--model {path}: no such file")
    try:
        size, run = tflite_runner(path)
    except (ValueError, RuntimeError, KeyError) as error:
        raise UserError(f"--model {path}: not a TFLite model made by export.py ({first_line(error)})") from None
    return size, lambda images: np.concatenate([run(image[None])["logits"] for image in np.asarray(images)])


def tflite_runner(model: bytes | str | os.PathLike) -> tuple[int, Callable[[np.ndarray], dict[str, np.ndarray]]]:
    """(input size, a function from one uint8 (1, S, S, 3) image to the signature's outputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter announces its successor package
        if isinstance(model, bytes):
            interpreter = tf.lite.Interpreter(model_content=model)
        else:
            interpreter = tf.lite.Interpreter(model_path=str(model))
    runner = interpreter.get_signature_runner("serve")
    size = int(runner.get_input_details()["images"]["shape"][1])
    return size, lambda image: runner(images=image)


def load_model(path: str | os.PathLike) -> keras.Model:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--model {path}: no such file")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a damaged or foreign file surfaces as many exception types
        raise UserError(f"--model {path}: cannot be loaded as a Keras model ({first_line(error)})") from None


def plan_jobs(
    input_dir: Path, output_dir: Path, *, recursive: bool, overlay: bool, overwrite: bool, into_input: bool
) -> list[Job]:
    """Every image's output paths, checked before anything is written."""
    if not input_dir.is_dir():
        raise UserError(f"--input {input_dir}: no such folder")
    inside_input = output_dir.resolve() == input_dir.resolve() or input_dir.resolve() in output_dir.resolve().parents
    if inside_input and not into_input:
        raise UserError(f"--output {output_dir} is inside the input folder {input_dir}; choose another folder "
                        "or pass --write-into-input")
    pattern = "**/*" if recursive else "*"
    sources = sorted(p for p in input_dir.glob(pattern)
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if inside_input:
        sources = [p for p in sources if not p.stem.endswith(("_mask", "_overlay"))]
    if not sources:
        raise UserError(f"--input {input_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                        + ("" if recursive else "; add --recursive to look in sub-folders"))
    jobs, claimed = [], {}
    for source in sources:
        folder = output_dir / source.parent.relative_to(input_dir)
        mask_path = folder / f"{source.stem}_mask.png"
        if mask_path in claimed:
            raise UserError(f"{source} and {claimed[mask_path]} would both be written to {mask_path}; rename one")
        claimed[mask_path] = source
        jobs.append(Job(source, mask_path, folder / f"{source.stem}_overlay.png" if overlay else None))
    existing = [p for job in jobs for p in (job.mask_path, job.overlay_path) if p is not None and p.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise UserError(f"{', '.join(map(str, existing[:3]))}{more} already exist; pass --overwrite to replace them")
    return jobs


def segment(
    size: int, predict_logits: Callable[[np.ndarray], np.ndarray], jobs: list[Job], *, batch_size: int
) -> Summary:
    """Decodes, predicts and writes in a stream: decoding and writing overlap prediction."""
    summary = Summary()
    loaded: dict[int, tuple[int, int]] = {}  # job index -> original (height, width)

    def decoded() -> Iterator[tuple[int, np.ndarray]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(jobs), 4 * batch_size):
                chunk = list(range(start, min(start + 4 * batch_size, len(jobs))))
                for index, result in zip(chunk, pool.map(lambda i: read_image(jobs[i].source, size), chunk)):
                    if isinstance(result, str):
                        summary.skipped.append((jobs[index].source, result))
                        continue
                    small, original_size = result
                    loaded[index] = original_size
                    yield index, small

    ds = tf.data.Dataset.from_generator(
        decoded, output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((size, size, 3), tf.uint8))
    ).batch(batch_size).prefetch(2)
    progress = keras.utils.Progbar(len(jobs), unit_name="image")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as writers:
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        for indices, images in ds:
            logits = predict_logits(images)
            for index, item_logits in zip(indices.numpy(), logits):
                pending.append(writers.submit(write_outputs, jobs[index], item_logits, loaded.pop(index)))
            while len(pending) > 2 * batch_size:  # bounds the logits waiting to be written
                summary.written += _finish(pending.popleft(), summary)
            progress.update(summary.written + len(pending) + len(summary.skipped))
        for future in pending:
            summary.written += _finish(future, summary)
    progress.update(len(jobs), finalize=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _finish(future: concurrent.futures.Future, summary: Summary) -> int:
    error = future.result()
    if error is None:
        return 1
    summary.skipped.append(error)
    return 0


def print_summary(summary: Summary) -> None:
    rate = summary.written / summary.seconds if summary.seconds else 0.0
    print(f"wrote {summary.written} image(s) in {summary.seconds:.1f} s ({rate:.1f} images/s); "
          f"skipped {len(summary.skipped)}")
    for path, reason in summary.skipped:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)


# --------------------------------------------------------------------------- images


def read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]] | str:
    """(the image resized to size x size as uint8 RGB, its (height, width) as seen), or why not.

    The size is the one a person sees: EXIF orientation applied. Large JPEGs are decoded at
    a reduced scale (never below `size`), so a huge photo costs little memory.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
                width, height = height, width
            image.draft("RGB", (size, size))  # JPEG only; a no-op for other formats
            upright = to_rgb(ImageOps.exif_transpose(image))
            return np.asarray(upright.resize((size, size), Image.Resampling.BILINEAR)), (height, width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return describe_bad_image(path, error)


def read_full_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(to_rgb(ImageOps.exif_transpose(image)))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit grey scaled down, not clipped; alpha dropped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray((values / top * 255).round().astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def describe_bad_image(path: Path, error: Exception) -> str:
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file (or a format this tool does not read)"
    return f"unreadable image ({first_line(error)})"


# --------------------------------------------------------------------------- outputs


def write_outputs(job: Job, logits: np.ndarray, original_size: tuple[int, int]) -> tuple[Path, str] | None:
    """Writes the mask (and overlay); returns (source, reason) if the image failed late."""
    try:
        mask = upsampled_argmax(logits, *original_size)
        job.mask_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(job.mask_path) as temporary:
            Image.fromarray(mask).save(temporary, format="PNG", compress_level=1)
        if job.overlay_path is not None:
            photo = read_full_image(job.source)
            with atomic_path(job.overlay_path) as temporary:
                Image.fromarray(overlay(photo, mask)).save(temporary, format="PNG")
    except (OSError, ValueError, SyntaxError) as error:  # e.g. a truncated file found on full decode
        job.mask_path.unlink(missing_ok=True)
        return job.source, describe_bad_image(job.source, error)
    return None


def upsampled_argmax(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """argmax of the logits resized bilinearly to (height, width), as uint8 class indices.

    Interpolating the logits, rather than enlarging a label map, gives smooth class borders.
    The interpolation is tf.image.resize's (half-pixel centres). Photos above
    WHOLE_IMAGE_PIXELS are done separably with two taps per axis, BAND_ROWS output rows at a
    time: a 50-megapixel photo then needs a few megabytes, not gigabytes of float logits.
    """
    if height * width <= WHOLE_IMAGE_PIXELS:
        return _resize_argmax(logits, tf.constant([height, width])).numpy()
    channels = np.moveaxis(np.asarray(logits, np.float32), -1, 0)  # (C, h, w): each class contiguous
    row_low, row_high, row_frac = linear_taps(height, channels.shape[1])
    col_low, col_high, col_frac = linear_taps(width, channels.shape[2])
    mask = np.empty((height, width), np.uint8)
    for start in range(0, height, BAND_ROWS):
        rows = slice(start, start + BAND_ROWS)
        frac = row_frac[rows][None, :, None]
        band = channels[:, row_low[rows]] * (1 - frac) + channels[:, row_high[rows]] * frac
        full = band[:, :, col_low] * (1 - col_frac) + band[:, :, col_high] * col_frac  # (C, b, width)
        best, winner = full[0], np.zeros(full.shape[1:], np.uint8)
        for index in range(1, len(full)):  # first maximum wins, as np.argmax
            better = full[index] > best
            winner[better] = index
            best = np.maximum(best, full[index])
        mask[rows] = winner
    return mask


@tf.function(reduce_retracing=True)
def _resize_argmax(logits: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.argmax(tf.image.resize(logits, size, method="bilinear"), axis=-1), tf.uint8)


@functools.lru_cache(maxsize=256)
def linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two source indices and the weight of the second."""
    position = np.clip((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0, in_size - 1)
    low = np.floor(position).astype(np.int64)
    return low, np.minimum(low + 1, in_size - 1), (position - low).astype(np.float32)


if __name__ == "__main__":
    sys.exit(run_cli(main))
