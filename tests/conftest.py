"""Shared test fixtures: the real Oxford-IIIT Pet sample (when present) and small data."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OXFORD_SAMPLE = REPO.parent / "shared" / "data" / "oxford-pets-sample"


@pytest.fixture
def oxford_sample() -> Path:
    """The 26-image Oxford-IIIT Pet sample in the official archive layout, read in place."""
    if not (OXFORD_SAMPLE / "annotations" / "trimaps").is_dir():
        pytest.skip(f"the Oxford-IIIT Pet sample is not at {OXFORD_SAMPLE}")
    return OXFORD_SAMPLE
