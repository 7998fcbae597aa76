"""sencache-bench: one harness to compare training-free caches of video diffusion transformers.

The Python API (:mod:`sencache_bench.api`) is re-exported here lazily: ``sencache_bench.run(...)`` imports
the API, and torch with it, only when first used, so ``import sencache_bench`` and ``--help`` stay light.
"""

__version__ = "0.1.0"

_API = ("run", "load_results", "load_spec", "table", "flops", "match")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sencache_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
