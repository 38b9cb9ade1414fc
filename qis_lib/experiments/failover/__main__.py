"""python -m qis_lib.experiments.failover: see `qis_lib.experiments.failover.cli`."""
from .cli import main

main()
