"""The bench-t2v model: procedural data, training, and the quality checks of its generated videos."""

from pathlib import Path

#: the shipped weights (float16 safetensors and provenance.json), loaded with from_pretrained
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
