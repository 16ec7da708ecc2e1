"""Shared pytest helpers: where the golden fixtures live and which fixture models exist."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


def fixture_models() -> list[str]:
    """Names of the fixture model folders (HF checkpoints with their transformers logits)."""
    return sorted(p.name for p in FIXTURES_DIR.iterdir()
                  if (p / "config.json").is_file() and (p / "logits.npy").is_file())


def shared_dir() -> Path:
    """The shared reference data folder (`NEOX_SHARED_DIR` overrides); it may be absent."""
    override = os.environ.get("NEOX_SHARED_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES_DIR
