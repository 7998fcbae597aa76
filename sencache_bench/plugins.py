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
working. ``sencache-bench policies`` / ``models`` show where each name comes from.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import BenchError
from .registry import Registry

if TYPE_CHECKING:
    from .models.base import ModelEntry
    from .policies.base import PolicyConfig

POLICY_GROUP = "sencache_bench.policies"
MODEL_GROUP = "sencache_bench.models"

C = TypeVar("C")
_current: list[dict] = []  # the plugin being loaded (innermost last): its label and what it registered
_loaded_modules: dict[str, list[str]] = {}  # module -> names it registered when first imported


def _policies() -> Registry:
    from .policies import POLICIES

    return POLICIES


def _models() -> Registry:
    from .models import MODELS

    return MODELS


def _report(registry: Registry, line: str) -> None:
    """One line per failed plugin: kept for ``sencache-bench policies`` / ``models``, and printed once."""
    if line not in registry.problems:
        registry.problems.append(line)
        print(f"warning: {line}", file=sys.stderr)


def _same_target(existing: Any, new: Any) -> bool:
    """A lazy ``module:attr`` entry point and the decorator in that module name the same object."""
    if existing is new or (isinstance(existing, str) and existing == new):
        return True
    if isinstance(new, str) and not isinstance(existing, str):
        existing, new = new, existing
    if isinstance(existing, str) and not isinstance(new, str):
        return existing == f"{getattr(new, '__module__', '')}:{getattr(new, '__qualname__', '')}"
    return False


def _register(registry: Registry, name: str, target: Any, aliases: tuple[str, ...], origin: str | None = None) -> None:
    """``origin``: the module that registered, when no plugin is being loaded (a notebook, a test)."""
    source = _current[-1]["label"] if _current else f"module {origin or getattr(target, '__module__', '?')}"
    existing = registry.target(name)
    if existing is not None and _same_target(existing, target):
        registry._loaded.pop(name, None)
        registry._targets[name] = target
    else:
        try:
            registry.add(name, target, aliases, source=source)
        except ValueError as err:
            raise BenchError(f"{source}: {err}") from None
    if _current:
        _current[-1]["names"].append(name)


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


@contextmanager
def _loading(label: str):
    _current.append({"label": label, "names": []})
    try:
        yield _current[-1]
    finally:
        _current.pop()


def load_module(module: str, label: str | None = None) -> list[str]:
    """Import a plugin module (once); the names it registered. Raises BenchError with one line on failure."""
    if module in _loaded_modules:
        return _loaded_modules[module]
    label = label or f"plugin {module}"
    with _loading(label) as state:
        try:
            importlib.import_module(module)
        except BenchError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of foreign code is reported, never propagated raw
            raise BenchError(f"{label}: import failed ({type(err).__name__}: {err})") from None
    _loaded_modules[module] = list(state["names"])
    if not state["names"]:
        raise BenchError(f"{label}: registers nothing (call sencache_bench.plugins.register_policy or "
                         f"register_model when the module is imported)")
    return state["names"]


def load_spec_plugins(modules: list[str], search: list = ()) -> None:
    """The spec's ``plugins:`` list. An import error stops the spec (it asked for the module); a clash or a
    module that registers nothing is reported and the spec goes on (its names then validate or not).
    ``search``: folders appended to sys.path (the spec's, the working directory), for modules not installed."""
    from .errors import SpecError

    for folder in search:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    for i, module in enumerate(modules):
        if module in _loaded_modules:
            continue
        try:
            load_module(module, label=f"plugin {module} (spec plugins[{i}])")
        except BenchError as err:
            if "import failed" in str(err):
                raise SpecError(f"plugins[{i}]: {err}") from None
            _report(_policies(), str(err))


def _entry_points(group: str) -> list:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=group), key=lambda ep: (ep.name, ep.value))


def discover_entry_points(registry: Registry) -> None:
    """Register the plugins of ``registry.entry_points``; each failure is one line in ``registry.problems``."""
    group = registry.entry_points
    for ep in _entry_points(group):
        dist = getattr(ep, "dist", None)
        where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
        label = f"plugin {ep.value} (entry point {ep.name!r} of {where})"
        try:
            if ep.attr:  # name = module:attr, registered lazily under the entry point's name
                if _same_target(registry.target(ep.name), ep.value):
                    continue  # a spec's plugins: imported the same class first
                try:
                    registry.add(ep.name, ep.value, source=label)
                except ValueError as err:
                    raise BenchError(f"{label}: {err}") from None
            else:
                load_module(ep.module, label=label)
        except BenchError as err:
            _report(registry, str(err))


def problems() -> list[str]:
    """Every plugin problem found so far, policies' and models'."""
    return [*_policies().problems, *_models().problems]
