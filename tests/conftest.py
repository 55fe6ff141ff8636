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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a second thread only waits for a busy core (runs 10–20×
    slower were seen with two). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``;
    the setting is restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
