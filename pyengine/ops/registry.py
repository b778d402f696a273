"""The op registry: named implementations, ordered by preference, chosen once per engine.

Each op (`top_k_mask`, `repetition_penalty`, ...) has a NumPy reference in `pyengine/ops/` that defines
its meaning, and per backend a literal, greppable table of implementations ordered by preference
(`cuda`, `triton`, `cpp`, `native`, `reference`). `select()` picks the first available one when an
engine is built, never per step.

`PYENGINE_IMPL_<OP>=<label>` forces a choice: an unavailable forced choice raises with the reason; an
automatic choice that is unavailable warns once and moves down the list.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyengine.utils import env

IMPL_LABELS = ("cuda", "triton", "cpp", "native", "reference")


@dataclass(frozen=True)
class Impl:
    """One implementation of one op.

    Args:
        label: one of IMPL_LABELS.
        fn: the callable.
        available: returns None when usable, else the reason it is not (checked at select time).
        quiet: True for impls that need hardware a machine may simply lack (cuda, triton without a GPU):
            the automatic choice then moves on without a warning; a forced choice still raises.
    """

    label: str
    fn: Callable[..., Any]
    available: Callable[[], str | None] = field(default=lambda: None)
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.label not in IMPL_LABELS:
            raise ValueError(f"impl label {self.label!r} is not one of {IMPL_LABELS}")


_warned: set[tuple[str, str]] = set()


def select(op: str, impls: list[Impl]) -> Impl:
    """Choose the implementation of `op`: the forced one, or the first available in preference order."""
    forced = env.forced_impl(op)
    if forced is not None:
        for impl in impls:
            if impl.label == forced:
                reason = impl.available()
                if reason is not None:
                    raise RuntimeError(f"PYENGINE_IMPL_{op.upper()}={forced} was requested but is unavailable: {reason}")
                return impl
        labels = [i.label for i in impls]
        raise ValueError(f"PYENGINE_IMPL_{op.upper()}={forced!r}: no such implementation of {op}; choose from {labels}")
    for impl in impls:
        reason = impl.available()
        if reason is None:
            return impl
        if not impl.quiet and (op, impl.label) not in _warned:
            _warned.add((op, impl.label))
            warnings.warn(f"pyengine: {impl.label} {op} unavailable ({reason}); using the next one", stacklevel=2)
    raise RuntimeError(f"no implementation of {op} is available")


class OpTable:
    """The ops one engine uses, resolved once: `table.top_k_mask(scores, k)` calls the chosen impl."""

    def __init__(self, tables: dict[str, list[Impl]]) -> None:
        self.tables = tables
        self.chosen: dict[str, Impl] = {}

    def __getattr__(self, op: str) -> Callable[..., Any]:
        if op in ("tables", "chosen"):
            raise AttributeError(op)
        impl = self.chosen.get(op)
        if impl is None:
            if op not in self.tables:
                raise AttributeError(f"no op named {op!r}; known: {sorted(self.tables)}")
            impl = self.chosen[op] = select(op, self.tables[op])
        return impl.fn

    def labels(self) -> dict[str, str]:
        """The implementation chosen per op (for benchmark records)."""
        for op in self.tables:
            getattr(self, op)  # resolves and records the choice
        return {op: impl.label for op, impl in self.chosen.items()}
