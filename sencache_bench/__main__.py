"""`python -m sencache_bench` (also what `torchrun -m sencache_bench` launches)."""

from .cli.app import main

main()
