"""Memory of the input pipeline with each --cache choice, at two dataset sizes.

Each measurement is a fresh process that builds data.build_dataset on a folder of synthetic
500x375 JPEGs and reads two training epochs (the second from the cache, if any), at
256x256. Reported: the peak resident memory above the process's baseline after imports,
and the seconds of each epoch. The difference between the sizes shows how memory grows with
the number of images.

    python bench/memory.py [--sizes 200,800] [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, machine, photo_folder, print_table

PROBE = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
import data
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import tensorflow as tf
tf.constant(0)
baseline = peak_mb()
options = data.DataOptions(image_size={size}, cache={cache!r}, cache_dir={cache_dir!r})
ds = data.build_dataset({folder!r}, "train", options, batch_size=16, training=True, seed=0)
epochs = []
for _ in range(2):
    started = time.perf_counter()
    for batch in ds:
        pass
    epochs.append(time.perf_counter() - started)
print(json.dumps({{"peak_mb": peak_mb() - baseline, "epochs": epochs}}))
"""


def measure(folder: Path, cache: str, size: int, scratch: Path) -> dict:
    cache_dir = str(scratch / f"cache-{cache}") if cache == "disk" else None
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    code = PROBE.format(repo=str(REPO), size=size, cache=cache, cache_dir=cache_dir, folder=str(folder))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200,800", help="training images in the two folders (default: 200,800)")
    parser.add_argument("--image-size", type=int, default=256, help="default: 256")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in sizes:
            folder = photo_folder(Path(tmp) / f"photos{count}", count, split="train")
            photo_folder(folder, 8, split="test")
            for cache in ("memory", "disk", "none"):
                result = measure(folder, cache, args.image_size, Path(tmp) / f"scratch{count}")
                peaks[(cache, count)] = result["peak_mb"]
                rows.append([cache, count, f"{result['peak_mb']:.0f}", f"{result['epochs'][0]:.1f}",
                             f"{result['epochs'][1]:.1f}"])
    per_image = [[cache, f"{(peaks[(cache, sizes[1])] - peaks[(cache, sizes[0])]) / (sizes[1] - sizes[0]) * 1024:.0f}"]
                 for cache in ("memory", "disk", "none")]
    print(f"\nmachine: {machine()}")
    print_table(f"Input pipeline memory, {args.image_size}x{args.image_size}, synthetic 500x375 JPEGs, two epochs",
                ["--cache", "images", "peak RSS above baseline, MB", "epoch 1 s", "epoch 2 s"], rows)
    print_table(f"Growth from {sizes[0]} to {sizes[1]} images", ["--cache", "KB per image"], per_image)


if __name__ == "__main__":
    main()
