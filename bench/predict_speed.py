"""Prediction: predict.py against a naive loop of model.predict on one image at a time.

Both segment the same folder of synthetic 500x375 JPEGs with the same model and write the
same class-index masks at full resolution. predict.py is timed end to end (model loading and
tracing included); the naive loop gets its model loaded and warmed up for free.

    python bench/predict_speed.py [--images 200] [--model mobilenet|unet]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, photo_folder, print_table

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import predict  # noqa: E402
from models import build_mobilenet_unet, build_unet  # noqa: E402


def naive_loop(model, paths: list[Path], out: Path, size: int) -> None:
    """What a first script does: one image, one model.predict call, one mask."""
    for path in paths:
        image = Image.open(path).convert("RGB")
        x = np.asarray(image.resize((size, size)), np.float32)[None] / 255.0
        logits = model.predict(x, verbose=0)[0]
        full = tf.image.resize(logits, (image.height, image.width), method="bilinear")
        Image.fromarray(tf.argmax(full, axis=-1).numpy().astype(np.uint8)).save(out / f"{path.stem}_mask.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="photos in the folder (default: 200)")
    parser.add_argument("--model", choices=("mobilenet", "unet"), default="mobilenet", help="default: mobilenet")
    parser.add_argument("--batch-size", type=int, default=32, help="predict.py batch size (default: 32)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = photo_folder(tmp / "photos", args.images) / "test" / "images"
        paths = sorted(photos.glob("*.jpg"))
        model = (build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None) if args.model == "mobilenet"
                 else build_unet((128, 128, 3), 3))
        model_path = tmp / "model.keras"
        model.save(model_path)

        (tmp / "naive").mkdir()
        model.predict(np.zeros((1, 128, 128, 3), np.float32), verbose=0)  # warm-up, not timed
        started = time.perf_counter()
        naive_loop(model, paths, tmp / "naive", 128)
        naive = time.perf_counter() - started

        rows = [["naive loop (model.predict per image)", len(paths), naive, len(paths) / naive, 1.0]]
        for label, extra in (("predict.py --no-overlay", ["--no-overlay"]), ("predict.py (with overlays)", [])):
            out = tmp / label.split()[-1].strip("()-")
            started = time.perf_counter()
            status = predict.main(["--model", str(model_path), "--input", str(photos), "--output", str(out),
                                   "--batch-size", str(args.batch_size)] + extra)
            seconds = time.perf_counter() - started
            assert status == 0
            rows.append([label, len(paths), seconds, len(paths) / seconds, naive / seconds])
        same = np.mean([np.mean(np.asarray(Image.open(tmp / "naive" / f"{p.stem}_mask.png"))
                                == np.asarray(Image.open(tmp / "no-overlay" / f"{p.stem}_mask.png"))) for p in paths])

    print(f"\nmachine: {machine()}")
    print_table(f"Prediction, {args.model} U-Net at 128x128, {len(paths)} JPEGs of 500x375",
                ["method", "images", "seconds", "images/s", "speed-up"], rows)
    print(f"\npixel agreement of the naive and predict.py masks: {same:.4f} "
          "(they differ only in the resize filter: PIL's antialiased bilinear vs its default)")


if __name__ == "__main__":
    main()
