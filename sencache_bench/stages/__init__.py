"""The stages of a run, one module each; :class:`sencache_bench.runner.Runner` orders them."""
