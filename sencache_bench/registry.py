"""A small registry of named entries: lazy ``"module:attr"`` targets, aliases and did-you-mean.

Modelled on lm-evaluation-harness' registries: a new model or policy is one file plus one line
here-and-there, and heavy modules are imported only when their entry is used.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._targets: dict[str, str | T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    def add(self, name: str, target: str | T, aliases: tuple[str, ...] = ()) -> None:
        if name in self._targets or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._targets[name] = target
        for alias in aliases:
            self._aliases[alias] = name

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def canonical(self, name: str) -> str:
        if name in self._targets:
            return name
        if name in self._aliases:
            return self._aliases[name]
        close = difflib.get_close_matches(name, list(self._targets) + list(self._aliases), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BenchError(f"unknown {self.kind} {name!r}.{hint} Valid: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        name = self.canonical(name)
        if name not in self._loaded:
            target = self._targets[name]
            if isinstance(target, str):
                module, _, attr = target.partition(":")
                target = getattr(importlib.import_module(module), attr)
            self._loaded[name] = target
        return self._loaded[name]
