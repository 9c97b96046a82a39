"""`python -m klag_collector` runs the same program as `klag-collector`."""

from .cli import main

main()
