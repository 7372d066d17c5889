"""Named corpora are found the same way everywhere: --data, else $RNN_JAX_DATA/<corpus>/..., else
the hub, and an error that says how to provide them; nothing in the code points at a machine's
folders."""

from pathlib import Path

import pytest

from rnn_jax.data import corpora

ROOT = Path(__file__).resolve().parents[1]


def test_a_path_or_hub_id_is_used_as_it_is():
    assert corpora.resolve("my/own/file.txt") == corpora.Source("my/own/file.txt")
    assert corpora.resolve("someone/dataset") == corpora.Source("someone/dataset")


def test_a_corpus_is_read_from_the_data_directory(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("to be")
    monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path))
    source = corpora.resolve("tinyshakespeare")
    assert source == corpora.Source(str(tmp_path / "tinyshakespeare" / "input.txt"))
    assert corpora.read("tinyshakespeare", lambda s: Path(s.location).read_text()) == "to be"


def test_without_a_data_directory_a_corpus_comes_from_the_hub(monkeypatch):
    monkeypatch.delenv(corpora.DATA_ENV, raising=False)
    assert corpora.resolve("tinyshakespeare") == corpora.Source("karpathy/tiny_shakespeare", on_hub=True)
    assert corpora.resolve("ud_english_ewt") == corpora.Source(
        "universal-dependencies/universal_dependencies", "en_ewt", on_hub=True
    )

    def offline(source):
        raise ConnectionError("no network")

    with pytest.raises(FileNotFoundError) as error:
        corpora.read("rt_sentence_polarity", offline)
    message = str(error.value)
    assert "RNN_JAX_DATA" in message and "rt_sentence_polarity/sentences.tsv" in message
    assert "cornell-movie-review-data/rotten_tomatoes" in message and "--data" in message


@pytest.mark.parametrize("env", [None, "missing"])
def test_a_corpus_without_a_hub_copy_says_how_to_get_it(monkeypatch, tmp_path, env):
    if env is None:
        monkeypatch.delenv(corpora.DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"RNN_JAX_DATA.*tatoeba_eng_fra/eng-fra.tsv.*no copy on the hub"):
        corpora.resolve("tatoeba_eng_fra")


def test_no_default_points_outside_the_repository():
    for folder in ("rnn_jax", "experiments", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "../shared" not in path.read_text(), path
    assert "../shared" not in (ROOT / "README.md").read_text()
