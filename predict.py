"""Segment every image in a folder (or one image) with a trained model, at each image's own resolution.

Example: python predict.py --model runs/RUN/best.keras --input photos/ --output masks/

For each image NAME.EXT it writes NAME_mask.png (the class index of each pixel, 8-bit, at
the image's width and height) and an overlay (the photo with the classes blended over it, in
the palette of visualize.py: class 0 orange, 1 blue, 2 yellow, 3 green, 4 purple, 5 red,
6 teal, 7 grey): NAME_overlay.jpg for a JPEG photo (quality 90: a photo stays a photo, at a
fortieth of the time a PNG takes to compress), NAME_overlay.png for any other. Exit status: 0 when every image was written, 1 when some were
skipped (each is named with its reason), 2 for a problem that stops the run.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from errors import interrupt_quietly_while_starting  # noqa: E402  (light: no TensorFlow)

if __name__ == "__main__":  # run as a script, not imported by the tests
    interrupt_quietly_while_starting()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from data import without_autotuning  # noqa: E402
from errors import UserError, run_cli, user_errors  # noqa: E402
from files import atomic_path, check_folder_can_be_made  # noqa: E402
from inference import IMAGE_EXTENSIONS, BadImage, Predictor, read_photo, resize_image, upsampled_argmax  # noqa: E402
from options import add_size_option, add_tta_option, check_at_least_one, load_model_option  # noqa: E402
from progress import Progress  # noqa: E402
from visualize import overlay  # noqa: E402

# Photo formats a user's folder may hold that neither PIL (as installed) nor TensorFlow decodes
# the way training does; named when left out.
UNREAD_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".dng")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True,
                        help="a trained model: .keras (e.g. RUN_DIR/best.keras), or a .tflite file or SavedModel "
                        "folder made by export.py")
    parser.add_argument("--input", required=True,
                        help="folder of images (JPEG, PNG, BMP, GIF, WebP; any letter case), or one image")
    parser.add_argument("--output", required=True, help="folder for the masks and overlays (created if needed)")
    parser.add_argument("--recursive", action="store_true",
                        help="also segment images in sub-folders, mirroring them under --output (default: off)")
    parser.add_argument("--batch-size", type=int, default=32, help="images predicted together (default: 32)")
    parser.add_argument("--no-overlay", action="store_true",
                        help="write only the masks, no overlays (default: off; overlays are JPEG for JPEG photos, "
                        "PNG otherwise)")
    add_tta_option(parser.add_argument, "(default: flip)")
    add_size_option(parser.add_argument)
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


# Photos up to this size are decoded once, in full, when an overlay is drawn on them: with
# 4 batches in flight that holds at most a few hundred megabytes. Larger ones are decoded at
# reduced scale for the model and again in full for the overlay.
KEEP_FOR_OVERLAY_PIXELS = 1_000_000


# --------------------------------------------------------------------------- the job


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_at_least_one(args, ("batch_size", "size"))
    # the paths first: a mistyped folder is refused before seconds of loading the model
    jobs = plan_jobs(Path(args.input), Path(args.output), recursive=args.recursive,
                     overlay=not args.no_overlay, overwrite=args.overwrite, into_input=args.write_into_input)
    predictor = load_model_option(args)
    summary = segment(predictor, jobs, batch_size=args.batch_size)
    print_summary(summary)
    return 1 if summary.skipped else 0


def plan_jobs(
    input_path: Path, output_dir: Path, *, recursive: bool, overlay: bool, overwrite: bool, into_input: bool
) -> list[Job]:
    """Every image's output paths, checked before anything is written.

    `input_path` is a folder, or one image: its outputs go to `output_dir` as a folder's would, and the
    folder it lies in counts as the input folder.
    """
    one_image = input_path.is_file()
    if one_image and input_path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"--input {input_path} is neither a folder nor an image ({', '.join(IMAGE_EXTENSIONS)})")
    if not one_image and not input_path.is_dir():
        raise UserError(f"--input {input_path}: no such folder or image")
    with user_errors(f"--output {output_dir}"):
        check_folder_can_be_made(output_dir)
    folder = input_path.parent if one_image else input_path
    inside_input = output_dir.resolve() == folder.resolve() or folder.resolve() in output_dir.resolve().parents
    if inside_input and not into_input:
        raise UserError(f"--output {output_dir} is inside the input folder {folder}; choose another folder "
                        "or pass --write-into-input")
    sources = [input_path] if one_image else find_images(input_path, recursive, skip_outputs=inside_input)
    jobs, claimed = [], {}
    for source in sources:
        into = output_dir / source.parent.relative_to(folder)
        mask_path = into / f"{source.stem}_mask.png"
        if mask_path in claimed:
            raise UserError(f"{source} and {claimed[mask_path]} would both be written to {mask_path}; rename one")
        claimed[mask_path] = source
        jobs.append(Job(source, mask_path, into / overlay_name(source) if overlay else None))
    existing = [p for job in jobs for p in (job.mask_path, job.overlay_path) if p is not None and p.exists()]
    if existing and not overwrite:
        raise UserError(f"{first_few(map(str, existing))} already exist; pass --overwrite to replace them")
    return jobs


def find_images(folder: Path, recursive: bool, skip_outputs: bool) -> list[Path]:
    """The folder's images (with --recursive, its sub-folders' too), sorted; `skip_outputs` leaves out
    earlier masks and overlays, for an output folder inside the input one. Photos in a format it
    cannot read (TIFF, HEIC: a phone's) are named, not passed over in silence."""
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    sources = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if skip_outputs:
        sources = [p for p in sources if not p.stem.endswith(("_mask", "_overlay"))]
    unread = [p for p in files if p.suffix.lower() in UNREAD_IMAGE_EXTENSIONS]
    if unread:
        why = (f"{len(unread)} photo(s) in a format predict.py does not read ({first_few(p.name for p in unread)}); "
               "convert them to JPEG or PNG")
        if sources:
            print(f"warning: left out {why}", file=sys.stderr)
        else:
            raise UserError(f"--input {folder} holds no images it reads ({', '.join(IMAGE_EXTENSIONS)}): {why}")
    if not sources:
        raise UserError(f"--input {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                        + ("" if recursive else "; add --recursive to look in sub-folders"))
    return sources


def first_few(names: Iterable[str], shown: int = 3) -> str:
    """"a, b, c and 4 more": a message's list of files, kept to one line."""
    names = list(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def overlay_name(source: Path) -> str:
    return f"{source.stem}_overlay{'.jpg' if source.suffix.lower() in ('.jpg', '.jpeg') else '.png'}"


def segment(predictor: Predictor, jobs: list[Job], *, batch_size: int) -> Summary:
    """Decodes, predicts and writes in a stream: decoding and writing overlap prediction."""
    summary = Summary()
    loaded: dict[int, tuple[int, int]] = {}  # job index -> original (height, width)
    photos: dict[int, np.ndarray] = {}  # job index -> the full photo, kept for its overlay
    size = predictor.size

    def read(index: int) -> tuple[np.ndarray, tuple[int, int]] | str:
        """The photo for the model; decoded in full once when its overlay can reuse it."""
        job = jobs[index]
        try:
            if job.overlay_path is not None and _pixels(job.source) <= KEEP_FOR_OVERLAY_PIXELS:
                pixels, original = read_photo(job.source)
                photos[index] = pixels
                return pixels, original
            return read_photo(job.source, model_size=size)
        except BadImage as error:
            return str(error)

    def decoded() -> Iterator[tuple[int, np.ndarray]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(jobs), 4 * batch_size):
                chunk = list(range(start, min(start + 4 * batch_size, len(jobs))))
                for index, result in zip(chunk, pool.map(read, chunk)):
                    if isinstance(result, str):
                        summary.skipped.append((jobs[index].source, result))
                        continue
                    pixels, original_size = result
                    loaded[index] = original_size
                    yield index, pixels

    ds = tf.data.Dataset.from_generator(
        decoded, output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((None, None, 3), tf.uint8))
    ).map(lambda index, pixels: (index, resize_image(pixels, size)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = without_autotuning(ds.batch(batch_size).prefetch(2))
    progress = Progress(len(jobs), "image")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as writers:
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        for indices, images in ds:
            logits = predictor(images.numpy())
            for index, item_logits in zip(indices.numpy(), logits):
                pending.append(writers.submit(write_outputs, jobs[index], item_logits, loaded.pop(index),
                                              photos.pop(index, None)))
            while len(pending) > 2 * batch_size:  # bounds the logits waiting to be written
                summary.written += _finish(pending.popleft(), summary)
            progress.update(summary.written + len(pending) + len(summary.skipped))
        for future in pending:
            summary.written += _finish(future, summary)
    progress.finish()
    summary.seconds = time.perf_counter() - started
    return summary


def _pixels(path: Path) -> int:
    try:
        with Image.open(path) as image:
            return image.width * image.height
    except (OSError, ValueError, SyntaxError):
        return 0  # read_photo names the problem


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


# --------------------------------------------------------------------------- outputs


def write_outputs(job: Job, logits: np.ndarray, original_size: tuple[int, int],
                  photo: np.ndarray | None = None) -> tuple[Path, str] | None:
    """Writes the mask (and overlay, on `photo` if it was kept); returns (source, reason) if the image failed late."""
    try:
        mask = upsampled_argmax(logits, *original_size)
        job.mask_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(job.mask_path) as temporary:
            Image.fromarray(mask).save(temporary, format="PNG", compress_level=1)
        if job.overlay_path is not None:
            if photo is None:
                photo, _ = read_photo(job.source)
            with atomic_path(job.overlay_path) as temporary:
                picture = Image.fromarray(overlay(photo, mask))
                if job.overlay_path.suffix == ".jpg":
                    picture.save(temporary, format="JPEG", quality=90)
                else:
                    picture.save(temporary, format="PNG", compress_level=1)
    except BadImage as error:  # e.g. a truncated file found on full decode
        job.mask_path.unlink(missing_ok=True)
        return job.source, str(error)
    except OSError as error:  # the output could not be written
        job.mask_path.unlink(missing_ok=True)
        return job.source, f"cannot write its output ({error})"
    return None


if __name__ == "__main__":
    sys.exit(run_cli(main))
