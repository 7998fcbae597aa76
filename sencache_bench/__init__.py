"""sencache-bench: one harness to compare training-free caches of video diffusion transformers."""

__version__ = "0.1.0"
