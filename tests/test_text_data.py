"""Text corpora through `datasets`: local files, local Hugging Face datasets (the hub code
path, fed offline), splits and their errors."""

import datasets
import pytest

from rnn_jax.data import text


@pytest.fixture(scope="module")
def local_hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    ds = datasets.Dataset.from_dict({"text": ["to be or not", "that is the question"], "id": [1, 2]})
    ds.save_to_disk(str(root / "single"))
    datasets.DatasetDict({"train": ds, "validation": ds.select([1])}).save_to_disk(str(root / "dict"))
    ds.to_parquet(str(root / "corpus.parquet"))
    return root


def test_hf_dataset_from_disk_parquet_and_splits(local_hf):
    assert text.load_hf_text(str(local_hf / "single")) == "to be or not\nthat is the question"
    assert text.load_hf_text(str(local_hf / "corpus.parquet")) == "to be or not\nthat is the question"
    assert text.load_hf_text(str(local_hf / "dict"), split="validation") == "that is the question"
    with pytest.raises(ValueError, match=r"no column 'content'; its columns are \['text', 'id'\]"):
        text.load_hf_text(str(local_hf / "single"), text_column="content")


def test_hub_name_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match="cannot load the Hugging Face dataset 'someone/no_such_corpus'.*save_to_disk"
    ):
        text.load_hf_text("someone/no_such_corpus")


def test_contiguous_split():
    train, validation = text.split_text("abcdefghij", 0.2)
    assert (train, validation) == ("abcdefgh", "ij")
    with pytest.raises(ValueError, match="validation fraction"):
        text.split_text("abc", 0.0)


def test_undecodable_bytes_are_named(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        text.load_text(str(tmp_path / "latin1.txt"))
