"""Layer 6, evaluation: baselines and the benchmark that compares selection methods."""
