"""One command line per experiment (`python -m experiments.<name> --help`)."""

from experiments import help_cache

help_cache.show_if_kept()  # a help text kept from an earlier call, before anything heavy is imported
