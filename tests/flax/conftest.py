"""Flax tests need jax and flax (the [jax] extra); skip the folder cleanly without them."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
