"""Loading plugins into registries: importing a plugin module, what it registered, entry points, one-line failures.

The machinery under :mod:`sencache_bench.plugins` (whose ``register_policy`` / ``register_model`` a plugin calls)
and :class:`~sencache_bench.registry.Registry` (which discovers its entry points on first lookup). It imports
nothing of the package but its errors, so the registry, the plugins and the registries of policies and models
depend on it one way (tests/test_imports.py).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import BenchError

if TYPE_CHECKING:
    from .registry import Registry

_current: list[dict] = []  # the plugin being loaded (innermost last): its label and what it registered
_loaded_modules: dict[str, list[str]] = {}  # module -> names it registered when first imported
_by_module: dict[str, list[str]] = {}  # module -> names registered from it, however it came to be imported


def loading_label() -> str | None:
    """The label of the plugin being loaded (None: a module imported by other means, a notebook, a test)."""
    return _current[-1]["label"] if _current else None


def note(name: str, module: str) -> None:
    """``name`` was registered from ``module`` (by the plugin being loaded, if one is)."""
    _by_module.setdefault(module, []).append(name)
    if _current:
        _current[-1]["names"].append(name)


def report(registry: Registry, line: str) -> None:
    """One line per failed plugin: kept for ``sencache-bench policies`` / ``models``, and printed once."""
    if line not in registry.problems:
        registry.problems.append(line)
        print(f"warning: {line}", file=sys.stderr)


def same_target(existing: Any, new: Any) -> bool:
    """A lazy ``module:attr`` entry point and the decorator in that module name the same object."""
    if existing is new or (isinstance(existing, str) and existing == new):
        return True
    if isinstance(new, str) and not isinstance(existing, str):
        existing, new = new, existing
    if isinstance(existing, str) and not isinstance(new, str):
        return existing == f"{getattr(new, '__module__', '')}:{getattr(new, '__qualname__', '')}"
    return False


@contextmanager
def _loading(label: str) -> Iterator[dict]:
    _current.append({"label": label, "names": []})
    try:
        yield _current[-1]
    finally:
        _current.pop()


def is_loaded(module: str) -> bool:
    return module in _loaded_modules


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
    # a module imported before (an entry point's lazy ``module:attr`` loaded it, or the user did) registered
    # when it ran then: its names are those registered from it or its submodules
    names = state["names"] or list(dict.fromkeys(n for m, ns in _by_module.items()
                                                  if m == module or m.startswith(f"{module}.") for n in ns))
    _loaded_modules[module] = list(names)
    if not names:
        raise BenchError(f"{label}: registers nothing (call sencache_bench.plugins.register_policy or "
                         f"register_model when the module is imported)")
    return names


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
                if same_target(registry.target(ep.name), ep.value):
                    continue  # a spec's plugins: imported the same class first
                try:
                    registry.add(ep.name, ep.value, source=label)
                except ValueError as err:
                    raise BenchError(f"{label}: {err}") from None
                _by_module.setdefault(ep.module, []).append(ep.name)
            else:
                load_module(ep.module, label=label)
        except BenchError as err:
            report(registry, str(err))
