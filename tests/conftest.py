"""Shared test setup: make the top-level modules importable and keep PyTorch single-threaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # rendering never needs a display
torch.set_num_threads(1)


@pytest.fixture
def root() -> Path:
    """The repository root, where main.py lives."""
    return ROOT
