"""Layer 3, labels: the label file format, label embeddings, the labeller and the label-store port."""
