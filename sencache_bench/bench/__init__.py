"""The bench-t2v model: procedural data, training, and the quality checks of its generated videos."""
