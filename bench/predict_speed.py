"""Prediction: predict.py against a naive loop of model.predict on one image at a time.

Both segment the same folder of photos with the same model and write the same class-index
masks at full resolution (predict.py with --tta none, predicting each photo once as the loop
does; its default --tta flip, which also predicts the mirror image, is timed beside it): by
default the 300 real Oxford-IIIT Pet photos of ../shared/data/oxford-pets-300 (150 to 1600
pixels a side), else synthetic 500x375 JPEGs.
Both are timed end to end from the saved model file: loading the model is part of each
(predict.py also traces its model once). Each method runs --repeats times, alternating, and
the median time is reported.

    python bench/predict_speed.py [--images 300] [--repeats 3] [--model mobilenet|unet] [--synthetic]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import SHARED_PETS, machine, photo_folder, print_table

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import predict  # noqa: E402
from models import build_mobilenet_unet, build_unet  # noqa: E402


def naive_loop(model_path: Path, paths: list[Path], out: Path, size: int) -> None:
    """What a first script does: load the model, then one image, one model.predict call, one mask."""
    model = keras.models.load_model(model_path, compile=False)
    for path in paths:
        image = Image.open(path).convert("RGB")
        x = np.asarray(image.resize((size, size)), np.float32)[None] / 255.0
        logits = model.predict(x, verbose=0)[0]
        full = tf.image.resize(logits, (image.height, image.width), method="bilinear")
        Image.fromarray(tf.argmax(full, axis=-1).numpy().astype(np.uint8)).save(out / f"{path.stem}_mask.png")


STREAMING_RATES: list[float] = []  # predict.py's own images/s, start-up excluded, --no-overlay --tta none runs


ONE_PASS_MASKS = ["--no-overlay", "--tta", "none"]


def run_predict(model_path: Path, photos: Path, out: Path, batch_size: int, extra: list[str]) -> None:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        status = predict.main(["--model", str(model_path), "--input", str(photos), "--output", str(out),
                               "--batch-size", str(batch_size), "--overwrite"] + extra)
    assert status == 0
    if extra == ONE_PASS_MASKS:
        STREAMING_RATES.append(float(re.search(r"\(([0-9.]+) images/s\)", captured.getvalue()).group(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="photos in the folder (default: 300)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic 500x375 JPEGs instead of the real photos")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method (default: 3)")
    parser.add_argument("--model", choices=("mobilenet", "unet"), default="mobilenet", help="default: mobilenet")
    parser.add_argument("--batch-size", type=int, default=32, help="predict.py batch size (default: 32)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real = SHARED_PETS / "images"
        if real.is_dir() and not args.synthetic:
            photos = tmp / "photos"
            photos.mkdir()
            for path in sorted(real.glob("*.jpg"))[: args.images]:
                shutil.copy(path, photos / path.name)
            kind = "real Oxford-IIIT Pet JPEGs of varied size"
        else:
            photos = photo_folder(tmp / "photos", args.images) / "test" / "images"
            kind = "synthetic JPEGs of 500x375"
        paths = sorted(photos.glob("*.jpg"))
        model = (build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None) if args.model == "mobilenet"
                 else build_unet((128, 128, 3), 3))
        model_path = tmp / "model.keras"
        model.save(model_path)

        methods = {
            "naive loop (model.predict per image)": lambda out: naive_loop(model_path, paths, out, 128),
            "predict.py --no-overlay --tta none": lambda out: run_predict(model_path, photos, out, args.batch_size,
                                                                          ONE_PASS_MASKS),
            "predict.py --no-overlay (default --tta flip: two passes)": lambda out: run_predict(
                model_path, photos, out, args.batch_size, ["--no-overlay"]),
            "predict.py (with overlays, --tta flip)": lambda out: run_predict(model_path, photos, out, args.batch_size, []),
        }
        times = {label: [] for label in methods}
        for repeat in range(args.repeats):
            for index, (label, method) in enumerate(methods.items()):
                out = tmp / f"out{index}-{repeat}"
                out.mkdir()
                started = time.perf_counter()
                method(out)
                times[label].append(time.perf_counter() - started)
        naive = statistics.median(times["naive loop (model.predict per image)"])
        rows = []
        for label, runs in times.items():
            seconds = statistics.median(runs)
            rows.append([label, len(paths), seconds, len(paths) / seconds, naive / seconds])
        naive_dir, fast_dir = tmp / "out0-0", tmp / "out1-0"
        same = np.mean([np.mean(np.asarray(Image.open(naive_dir / f"{p.stem}_mask.png"))
                                == np.asarray(Image.open(fast_dir / f"{p.stem}_mask.png"))) for p in paths])

    print(f"\nmachine: {machine()}")
    print_table(f"Prediction, {args.model} U-Net at 128x128, {len(paths)} {kind}, median of {args.repeats}",
                ["method", "images", "seconds", "images/s", "speed-up"], rows)
    print("\nall runs (seconds): " + "; ".join(f"{label}: {', '.join(f'{t:.1f}' for t in runs)}"
                                              for label, runs in times.items()))
    rate = statistics.median(STREAMING_RATES)
    print(f"\npredict.py --no-overlay --tta none as it reports itself (its model loading and tracing excluded): "
          f"{rate:.1f} images/s")
    overlays = (statistics.median(times["predict.py (with overlays, --tta flip)"])
                / statistics.median(times["predict.py --no-overlay (default --tta flip: two passes)"]))
    print(f"\noverlays cost {overlays:.2f} times the masks-only run")
    print(f"\npixel agreement of the naive and predict.py masks: {same:.4f} "
          "(they differ only in the resize filter: PIL's antialiased bilinear vs its default)")


if __name__ == "__main__":
    main()
