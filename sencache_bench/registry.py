"""A small registry of named entries: lazy ``"module:attr"`` targets, aliases, did-you-mean, and sources.

Modelled on lm-evaluation-harness' registries: a new model or policy is one file plus one line
here-and-there, and heavy modules are imported only when their entry is used. Every name remembers
where it came from (``built-in``, or the plugin that registered it), and a registry with an
``entry_points`` group discovers its plugins (:mod:`sencache_bench.discovery`) the first time a name is
looked up, so importing the package or printing ``--help`` stays light.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from .discovery import discover_entry_points
from .errors import BenchError

T = TypeVar("T")
BUILT_IN = "built-in"


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_points: str | None = None):
        self.kind = kind
        self.entry_points = entry_points  # importlib.metadata group of plugins, discovered on first lookup
        self._targets: dict[str, str | T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._discovered = entry_points is None
        #: one line per plugin that failed (import error, name clash, registered nothing)
        self.problems: list[str] = []

    def _discover(self) -> None:
        if not self._discovered:
            self._discovered = True
            discover_entry_points(self)

    def add(self, name: str, target: str | T, aliases: tuple[str, ...] = (), source: str = BUILT_IN) -> None:
        for key in (name, *aliases):
            if key in self._targets or key in self._aliases:
                owner = self._aliases.get(key, key)
                raise ValueError(f"{self.kind} {key!r} is registered twice (already by {self._sources[owner]})")
        self._targets[name] = target
        self._sources[name] = source
        for alias in aliases:
            self._aliases[alias] = name

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (tests, and a plugin whose registration failed half-way)."""
        self._targets.pop(name, None)
        self._loaded.pop(name, None)
        self._sources.pop(name, None)
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]

    def target(self, name: str) -> str | T | None:
        """What ``name`` is registered to, without importing it (None: not registered)."""
        return self._targets.get(self._aliases.get(name, name))

    def source(self, name: str) -> str:
        """Where ``name`` comes from: ``built-in`` or the plugin that registered it."""
        self._discover()
        return self._sources[self.canonical(name)]

    def aliases(self, name: str) -> list[str]:
        return sorted(a for a, n in self._aliases.items() if n == name)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._targets or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def canonical(self, name: str) -> str:
        self._discover()
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
                try:
                    target = getattr(importlib.import_module(module), attr)
                except (ImportError, AttributeError) as err:
                    if self._sources[name] == BUILT_IN:
                        raise
                    raise BenchError(f"{self.kind} {name!r} from {self._sources[name]}: could not load {module}:"
                                     f"{attr} ({type(err).__name__}: {err})") from None
            self._loaded[name] = target
        return self._loaded[name]
