"""Shared test fixtures: the real Oxford-IIIT Pet data (when present), running scripts, precision."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from errors import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OXFORD_SAMPLE = SHARED / "data" / "oxford-pets-sample"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_1.0_224_no_top.h5"


@pytest.fixture
def oxford_sample() -> Path:
    """The 26-image Oxford-IIIT Pet sample in the official archive layout, read in place."""
    if not (OXFORD_SAMPLE / "annotations" / "trimaps").is_dir():
        pytest.skip(f"the Oxford-IIIT Pet sample is not at {OXFORD_SAMPLE}")
    return OXFORD_SAMPLE


@pytest.fixture
def mobilenet_weights() -> Path:
    """The real MobileNetV2 ImageNet weights (no top), read in place."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"the MobileNetV2 ImageNet weights are not at {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


@pytest.fixture
def random_mobilenet_weights(tmp_path) -> Path:
    """A MobileNetV2 no-top weights file for 64-px models, random weights: --encoder-weights PATH as a
    user without internet gives it, in tests that need no real features."""
    path = tmp_path / "mobilenet_no_top.weights.h5"
    keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None).save_weights(path)
    return path


@pytest.fixture
def float32_policy():
    """Lets a test change Keras' global precision policy and puts float32 back afterwards."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def schedule_config(optimizer: keras.optimizers.Optimizer) -> dict:
    """The config of the learning-rate schedule an optimizer was made with (its peak is
    `warmup_target`). Keras' public `learning_rate` gives only the schedule's current value, so
    this reads the private attribute, in this one place."""
    return optimizer._learning_rate.get_config()


def run_main(main, argv, capsys) -> tuple[int, str, str]:
    """A script's main run as from the shell (errors become messages): (status, stdout, stderr)."""
    status = run_cli(main, [str(word) for word in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_subprocess(args, *, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """A script in a fresh Python process from the repository folder, output captured as text."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow first, the rest in their files' order. pytest-xdist hands each worker
    a run of tests and lets a worker that runs out take half of another's remaining ones; begun
    last, a minute-long training test kept one worker busy while the other had nothing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
