"""Layer 9, the command line: one module per command group over the assembly layer."""
