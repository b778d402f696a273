"""ModelOutput: transformers' ordered-dict dataclass for model and generation outputs.

Semantics (transformers `utils/generic.py`): only fields that are not None become keys; `obj["name"]`,
`obj.name` and `obj[i]` (index into `to_tuple()`, which skips None) all work; `pop`/`update`/`setdefault`
and deleting keys raise, because the object doubles as a frozen record.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any


class ModelOutput(OrderedDict):
    """Base for `@dataclass` output classes; see module docstring."""

    def __post_init__(self) -> None:
        fields = dataclasses.fields(self)
        if not fields:
            raise ValueError(f"{type(self).__name__} has no fields.")
        for field in fields:
            value = getattr(self, field.name)
            if value is not None:
                super().__setitem__(field.name, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return dict(self.items())[key]
        return self.to_tuple()[key]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.keys() and value is not None:
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def __delitem__(self, *args: Any, **kwargs: Any) -> None:
        raise Exception(f"You cannot use ``__delitem__`` on a {type(self).__name__} instance.")

    def setdefault(self, *args: Any, **kwargs: Any) -> Any:
        raise Exception(f"You cannot use ``setdefault`` on a {type(self).__name__} instance.")

    def pop(self, *args: Any, **kwargs: Any) -> Any:
        raise Exception(f"You cannot use ``pop`` on a {type(self).__name__} instance.")

    def update(self, *args: Any, **kwargs: Any) -> None:
        raise Exception(f"You cannot use ``update`` on a {type(self).__name__} instance.")

    def __reduce__(self):  # pickle as a dataclass, not as an OrderedDict
        return type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self[k] for k in self.keys())
