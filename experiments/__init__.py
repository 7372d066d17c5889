"""One command line per experiment (`python -m experiments.<name> --help`)."""

# every experiment's --quick run, written as the command line a newcomer types: the tests run
# each (tests/conftest.py, with --out), benchmarks.time_to_result times each cold and warm. The
# char-LM reads Tiny Shakespeare (from $RNN_JAX_DATA), so the README's samples apply to it.
QUICK_COMMAND_LINES = [
    "python -m experiments.gradient_flow --quick",
    "python -m experiments.ablate --quick",
    "python -m experiments.char_lm --quick --data tinyshakespeare",
    "python -m experiments.sentiment --quick",
    "python -m experiments.tagging --quick",
    "python -m experiments.translate --quick",
    "python -m experiments.caption --quick",
    "python -m experiments.tabular --quick",
    "python -m experiments.forecast --quick",
]
