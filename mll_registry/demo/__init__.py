"""The bundled demo: emoji concepts rendered in several styles, demo graph and demo hub data."""
