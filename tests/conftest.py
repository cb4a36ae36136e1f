"""Fixtures shared by every test tier. Functions live in each tier (tests/unit/clitools.py):
importing from a conftest breaks as soon as a second tier has its own conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private labvirt state root (never the user's ~/.local/state)."""
    return tmp_path / "state"
