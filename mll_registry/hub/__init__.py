"""Layer 4a, the Hugging Face Hub: discovery of new models and model cards (peer of ``registry``)."""
