"""Layer 2, models: checked configs, model references and their schemes, safe weight loading,
image streaming into a model."""
