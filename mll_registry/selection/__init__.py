"""Layer 5, selection and reuse: task-to-concept matching, per-class model selection,
source weights and the entropy-weighted ensemble."""
