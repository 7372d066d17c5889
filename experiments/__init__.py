"""One command line per experiment (`python -m experiments.<name> --help`)."""
