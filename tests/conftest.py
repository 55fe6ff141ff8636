import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "cmn-eng"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def cmn_eng() -> Path:
    if not (SHARED_DATA / "train.tsv").exists():
        pytest.skip(f"Tatoeba data not found at {SHARED_DATA} (clone beside ../shared to run this test)")
    return SHARED_DATA
