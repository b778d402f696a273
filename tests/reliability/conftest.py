"""Reliability tests: shared fixtures (the models live in `_models.py`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _quiet_generate_notices() -> Iterator[None]:
    """generate() logs transformers' pad/EOS notices; hundreds of examples make them noise. Module scope:
    hypothesis refuses function-scoped fixtures, and the level is restored for the other test folders."""
    logger = logging.getLogger("pyengine")
    old = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(old)
