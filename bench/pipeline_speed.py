"""Input pipeline: data.build_dataset against the tutorial's pipeline, JPEG files to batches.

Both read the same folder of synthetic 500x375 JPEG photos with PNG masks and make shuffled,
flipped, normalized batches of 64 at 128x128. The tutorial's pipeline resizes image and mask
to float32 (bilinearly, both) and caches floats; this project caches uint8 and normalizes
after the cache. Each pipeline runs in its own process, so resident memory is its own:
"RSS growth MB" is the growth of resident memory from before the first epoch to after the
second (the cache plus TensorFlow's own buffers); "cache MB" is what the cached tensors hold.

Each pipeline runs --repeats times in fresh processes, alternating; medians are reported.

    python bench/pipeline_speed.py [--images 300] [--repeats 3]
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

from _common import machine, photo_folder, print_table


def resident_mb() -> float:
    with open("/proc/self/statm") as file:
        pages = int(file.read().split()[1])
    return pages * 4096 / 2**20


def project_pipeline(folder: Path):
    import data

    return data.build_dataset(folder, "train", data.DataOptions(image_size=128), batch_size=64, training=True, seed=0)


def tutorial_pipeline(folder: Path, stop_before_cache: bool = False):
    """The TensorFlow segmentation tutorial's steps, reading files instead of TFDS."""
    import keras
    import tensorflow as tf

    images = sorted(str(p) for p in (folder / "train" / "images").glob("*.jpg"))
    masks = [p.replace("/images/", "/masks/").replace(".jpg", ".png") for p in images]

    def load(image_path, mask_path):
        image = tf.image.decode_jpeg(tf.io.read_file(image_path), channels=3)
        mask = tf.image.decode_png(tf.io.read_file(mask_path), channels=1)
        image = tf.image.resize(image, (128, 128))
        mask = tf.image.resize(mask, (128, 128))  # bilinear: the tutorial's known bug
        return tf.cast(image, tf.float32) / 255.0, mask

    flip_images = keras.layers.RandomFlip(mode="horizontal", seed=42)
    flip_masks = keras.layers.RandomFlip(mode="horizontal", seed=42)

    def augment(image, mask):
        return flip_images(image), flip_masks(mask)

    ds = tf.data.Dataset.from_tensor_slices((images, masks)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if stop_before_cache:
        return ds
    return ds.cache().shuffle(1000).batch(64).map(augment).prefetch(tf.data.AUTOTUNE)


def measure(variant: str, folder: Path) -> dict:
    """Runs in a child process: times the decode epoch and a cached epoch."""
    import tensorflow as tf  # noqa: F401  (imported before the baseline memory reading)

    before = resident_mb()
    started = time.perf_counter()
    ds = (project_pipeline if variant == "project" else tutorial_pipeline)(folder)
    times, count = [], 0
    for _ in range(2):
        count = 0
        for batch in ds:
            count += int(batch[0].shape[0])
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
    cached_bytes = count * sum(spec.shape.num_elements() * spec.dtype.size for spec in cached_spec(variant, folder))
    return {"images": count, "first": times[0], "cached": times[1], "rss_mb": resident_mb() - before,
            "cache_mb": cached_bytes / 2**20}


def cached_spec(variant: str, folder: Path):
    """The (image, mask) element spec of what each pipeline puts in its cache."""
    if variant == "project":
        import data

        return data.load_examples(folder, "train", data.DataOptions(image_size=128)).element_spec
    return tutorial_pipeline(folder, stop_before_cache=True).element_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="photos in the folder (default: 300)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pipeline (default: 3)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = photo_folder(Path(tmp), args.images, split="train")
        runs = {"tutorial": [], "project": []}
        for _ in range(args.repeats):
            for variant in runs:
                out = subprocess.run([sys.executable, __file__, "--child", variant, str(folder)],
                                     capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        results = {variant: {key: statistics.median(r[key] for r in results_) for key in results_[0]}
                   for variant, results_ in runs.items()}
    base = results["tutorial"]
    rows = []
    for variant, label in (("tutorial", "tutorial (float32 cache)"), ("project", "data.build_dataset (uint8 cache)")):
        r = results[variant]
        rows.append([label, r["images"], r["images"] / r["first"], r["images"] / r["cached"], r["rss_mb"], r["cache_mb"],
                     f"{base['first'] / r['first']:.2f} / {base['cached'] / r['cached']:.2f} / {r['cache_mb'] / base['cache_mb']:.2f}"])
    print(f"\nmachine: {machine()}")
    print_table(f"Input pipeline, {args.images} JPEGs of 500x375 to batches of 64 at 128x128, median of {args.repeats}",
                ["pipeline", "images", "decode epoch images/s", "cached epoch images/s", "RSS growth MB",
                 "cache MB", "speed-up decode / cached, cache ratio"], rows)


if __name__ == "__main__":
    main()
