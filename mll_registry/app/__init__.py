"""Layer 8, the assembly layer: the composition root that flows and the CLI call."""
