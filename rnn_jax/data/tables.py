"""Loading any tabular dataset through `datasets`: local files or the Hugging Face hub.

`load_table(source)` accepts a local .csv / .tsv / .json(l) / .parquet file (or a quoted
glob of them), a folder written by `Dataset.save_to_disk`, or a hub id (which needs the
network: without it, the error says how to bring the data over). Every task loader of
`rnn_jax.data` reads through it, so each task works from local files and from the hub alike.
"""

from __future__ import annotations

import glob as globlib
from pathlib import Path

BUILDERS = {
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".conllu": "text",
    ".txt": "text",
}


def load_table(source: str, *, split: str = "train", config: str | None = None, as_lines: bool = False):
    """A `datasets.Dataset`: split `split` of a hub dataset (configuration `config`, if it has
    several) or of a `save_to_disk` folder, or all rows of local files (a local file has no
    splits). `as_lines`: read local files as lines of text (a ``text`` column), whatever their
    suffix (e.g. a header-less TSV)."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(source)
    if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists()):
        table = datasets.load_from_disk(str(local))
        if isinstance(table, datasets.DatasetDict):
            if split not in table:
                raise ValueError(f"{source}: no split {split!r}; it has {list(table)}")
            table = table[split]
        return table
    suffix = local.suffix.lower()
    if suffix in BUILDERS:
        files = sorted(globlib.glob(source, recursive=True))
        if not files:
            raise FileNotFoundError(f"no file matches {source!r}; check the path (quote a glob)")
        builder = "text" if as_lines else BUILDERS[suffix]
        options = {"delimiter": "\t"} if suffix == ".tsv" and builder == "csv" else {}
        if builder == "text":
            options["keep_linebreaks"] = False
        return datasets.load_dataset(builder, data_files=files, split="train", **options)
    if local.exists():
        raise ValueError(
            f"{source}: unknown file type {suffix!r}; give one of {', '.join(BUILDERS)}, or a save_to_disk folder"
        )
    try:
        return datasets.load_dataset(source, config, split=split)
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise FileNotFoundError(
            f"cannot load the Hugging Face dataset {source!r} ({type(error).__name__}: {error}). Without network "
            "access to the hub, download it on a connected machine, `save_to_disk` it, and pass that folder "
            "(or a local .parquet/.jsonl file) instead"
        ) from error


def has_split(source: str, split: str) -> bool:
    """Whether `source` is a dataset with named splits (hub or `save_to_disk` folder) that has
    `split`; local files have none."""
    local = Path(source)
    if local.is_dir() and (local / "dataset_dict.json").exists():
        import json

        return split in json.loads((local / "dataset_dict.json").read_text())["splits"]
    if local.exists() or local.suffix.lower() in BUILDERS:
        return False
    try:
        import datasets

        return split in datasets.get_dataset_split_names(source)
    except Exception:  # offline: load_table gives the explanation when the data is read
        return False


def require_columns(table, source: str, columns) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"dataset {source!r} has no column {missing[0]!r}; its columns are {table.column_names}")
