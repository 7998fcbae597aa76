"""Plugins: policies and models that live outside this package.

Two ways in, as pytest and lm-evaluation-harness do it:

- Python entry points, groups ``sencache_bench.policies`` and ``sencache_bench.models``, declared by an
  installed distribution. ``name = module:attr`` registers ``name`` lazily (the module is imported the first
  time the name is used); ``name = module`` imports the module at discovery, and the module registers its
  names itself with :func:`register_policy` / :func:`register_model`.
- A spec's ``plugins: [module, ...]``: modules imported before the spec is validated, so their names
  validate like built-ins (no packaging needed).

A plugin that fails (import error, name clash, registers nothing) costs one line naming the plugin and the
problem, printed once to stderr and kept in ``Registry.problems``; every other command and plugin keeps
working. ``sencache-bench policies`` / ``models`` show where each name comes from. The loading itself (imports,
entry points, the one-line reports) is :mod:`sencache_bench.discovery`'s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import discovery
from .errors import BenchError

if TYPE_CHECKING:
    from .models.base import ModelEntry
    from .policies.base import PolicyConfig
    from .registry import Registry

POLICY_GROUP = "sencache_bench.policies"
MODEL_GROUP = "sencache_bench.models"

C = TypeVar("C")


def _policies() -> Registry:
    from .policies import POLICIES

    return POLICIES


def _models() -> Registry:
    from .models import MODELS

    return MODELS


def _register(registry: Registry, name: str, target: Any, aliases: tuple[str, ...], origin: str | None = None) -> None:
    """``origin``: the module that registered, when no plugin is being loaded (a notebook, a test)."""
    module = origin or getattr(target, "__module__", "?")
    source = discovery.loading_label() or f"module {module}"
    existing = registry.target(name)
    if existing is not None and discovery.same_target(existing, target):
        registry._loaded.pop(name, None)
        registry._targets[name] = target
    else:
        try:
            registry.add(name, target, aliases, source=source)
        except ValueError as err:
            raise BenchError(f"{source}: {err}") from None
    discovery.note(name, module)


def register_policy(name: str, config_cls: type[PolicyConfig] | None = None, *, aliases: tuple[str, ...] = ()):
    """Register a policy config class under ``name``; with no class, a class decorator.

    ``@register_policy("my-cache")`` above ``class MyCacheConfig(PolicyConfig)``. The class's ``name`` field
    should be ``Literal["my-cache"] = "my-cache"`` (the spec's ``policy.name``).
    """
    from .policies.base import PolicyConfig

    def add(cls: type[C]) -> type[C]:
        if not (isinstance(cls, type) and issubclass(cls, PolicyConfig)):
            raise BenchError(f"register_policy({name!r}): expected a PolicyConfig subclass, got {cls!r}")
        _register(_policies(), name, cls, tuple(aliases))
        return cls

    return add if config_cls is None else add(config_cls)


def register_model(name: str, entry: ModelEntry | Callable[[], ModelEntry] | None = None, *,
                   aliases: tuple[str, ...] = ()):
    """Register a :class:`~sencache_bench.models.base.ModelEntry` under ``name``; with no entry, a decorator
    for a zero-argument function that returns the entry (called once, at registration)."""
    from .models.base import ModelEntry

    caller = sys._getframe(1).f_globals.get("__name__")  # an entry instance's __module__ is models.base

    def add(obj):
        value = obj() if callable(obj) and not isinstance(obj, ModelEntry) else obj
        if not isinstance(value, ModelEntry):
            raise BenchError(f"register_model({name!r}): expected a ModelEntry, got {type(value).__name__}")
        if value.name != name:
            raise BenchError(f"register_model({name!r}): the entry is named {value.name!r}; use the same name")
        origin = obj.__module__ if callable(obj) and not isinstance(obj, ModelEntry) else caller
        _register(_models(), name, value, tuple(aliases), origin=origin)
        return obj

    return add if entry is None else add(entry)


def load_spec_plugins(modules: list[str], search: list = ()) -> None:
    """The spec's ``plugins:`` list. An import error stops the spec (it asked for the module); a clash or a
    module that registers nothing is reported and the spec goes on (its names then validate or not).
    ``search``: folders appended to sys.path (the spec's, the working directory), for modules not installed."""
    from .errors import SpecError

    for folder in search:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    for i, module in enumerate(modules):
        if discovery.is_loaded(module):
            continue
        try:
            discovery.load_module(module, label=f"plugin {module} (spec plugins[{i}])")
        except BenchError as err:
            if "import failed" in str(err):
                raise SpecError(f"plugins[{i}]: {err}") from None
            discovery.report(_policies(), str(err))


def problems() -> list[str]:
    """Every plugin problem found so far, policies' and models'."""
    return [*_policies().problems, *_models().problems]
