"""``python -m mll_registry.cli``: the ``mll`` command."""

from mll_registry.cli.main import run

run()
