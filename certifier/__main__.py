"""``python -m certifier``: the same as the ``certifier`` command."""

from certifier.cli import main

main()
