"""Shared fixtures: where the workspace's reference data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()


@pytest.fixture
def url_lists() -> Path:
    """The real URL lists beside the checkout (parsing fixtures only: never fetched)."""
    path = SHARED / "url-lists"
    if not path.is_dir():
        pytest.skip(f"reference URL lists not found at {path} (a clone outside the workspace)")
    return path
