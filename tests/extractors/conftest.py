"""Fixtures of the feature-extractor tests: loaded models and the real clips.

These tests need no database and no Django settings.
"""

import csv
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def clips_dir() -> Path:
    """Return the folder of the real clips: $RECSYS_DATA_DIR/clips, relative to the repository root."""
    return (REPO_ROOT / os.environ.get("RECSYS_DATA_DIR", "../shared/data")).resolve() / "clips"


@pytest.fixture(scope="session")
def clips() -> dict[str, dict[str, str]]:
    """Map each clip id of clips.csv to its row, with `path` added; skip when the data is absent."""
    manifest = clips_dir() / "clips.csv"
    if not manifest.exists():
        pytest.skip(f"real clips not found at {manifest}; set RECSYS_DATA_DIR")
    with manifest.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return {row["clip_id"]: {**row, "path": str(clips_dir() / row["file"])} for row in rows}


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run the models on one torch thread, as the workers do by default.

    On a busy machine, two OpenMP threads that share cores with other processes
    spin-wait and run several times slower than one.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def embedders():
    from workers.extractors.pipeline import get_embedders

    return get_embedders(num_threads=1)


@pytest.fixture(scope="session")
def visual_embedder(embedders):
    return embedders.visual


@pytest.fixture(scope="session")
def text_embedder(embedders):
    return embedders.text
