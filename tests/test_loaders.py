"""The task building blocks: vocabularies, padding, the task loaders (local files and a local
stand-in for the hub), the many-to-one readout, the task losses, and the one-step RNN = MLP
identity."""

import json

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import SequenceModel, make_cell
from rnn_jax.data import loaders
from rnn_jax.data.batches import chunks, pad, shuffled_batches
from rnn_jax.data.vocab import PAD, UNK, Vocab
from rnn_jax.gradflow import grads_and_flow
from rnn_jax.layers import StackOptions
from rnn_jax.losses import apply, classification_cross_entropy, sequence_cross_entropy, sequence_mse

CONLLU = """# sent_id = 1
# text = The cat sat.
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
"""


def test_vocab_build_encode_decode():
    vocab = Vocab.build([["a", "b", "a"], ["c", "a", "b"], ["d"]], min_count=2)
    assert vocab.tokens == (PAD, UNK, "a", "b")
    np.testing.assert_array_equal(vocab.encode(["b", "zzz", "a"]), [3, 1, 2])
    assert vocab.decode([2, 3, 0, 0]) == ["a", "b"]
    labels = Vocab.build([["x", "y"]], specials=(PAD,))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        labels.encode(["x", "q"])
    with pytest.raises(ValueError, match="no token"):
        Vocab.build([["a"]], min_count=2)


def test_pad_sides_and_truncation():
    ids, mask = pad([np.array([1, 2, 3]), np.array([4])], 2, side="left")
    np.testing.assert_array_equal(ids, [[2, 3], [0, 4]])  # left keeps the last tokens
    np.testing.assert_array_equal(mask, [[True, True], [False, True]])
    ids, mask = pad([np.array([1, 2, 3]), np.array([4])], 4)
    np.testing.assert_array_equal(ids, [[1, 2, 3, 0], [4, 0, 0, 0]])
    np.testing.assert_array_equal(mask.sum(1), [3, 1])


def test_shuffled_batches_cover_each_epoch_and_depend_only_on_the_step():
    get_batch = shuffled_batches({"x": np.arange(10)}, 3, seed=0)
    epoch = np.concatenate([np.asarray(get_batch(s)["x"]) for s in range(3)])
    assert len(set(epoch.tolist())) == 9  # 3 batches of 3 distinct rows; the 10th row waits
    np.testing.assert_array_equal(get_batch(4)["x"], get_batch(4)["x"])
    assert [len(c["x"]) for c in chunks({"x": np.arange(10)}, 4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="fewer than one batch"):
        shuffled_batches({"x": np.arange(2)}, 3, seed=0)


def test_tokenize():
    assert loaders.tokenize("It's a GREAT film, isn't it?") == ["it's", "a", "great", "film", ",", "isn't", "it", "?"]


def test_load_sentiment_tsv_shuffles_and_splits(tmp_path):
    path = tmp_path / "s.tsv"
    rows = [f"{i % 2}\tline {i} {'good' if i % 2 else 'bad'} ." for i in range(50)]
    path.write_text("label\ttext\n" + "\n".join(sorted(rows)) + "\n")
    splits = loaders.load_sentiment(str(path), seed=0)
    assert [len(splits[s][1]) for s in loaders.SPLITS] == [40, 5, 5]
    assert 0 < splits["train"][1].mean() < 1  # shuffled: both labels in training
    for tokens, labels in splits.values():
        assert all(("good" in t) == bool(y) for t, y in zip(tokens, labels))


def test_load_sentiment_uses_folds_and_hub_splits(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        "".join(json.dumps({"fold": i % 10, "label": i % 2, "text": f"review {i}"}) + "\n" for i in range(40))
    )
    splits = loaders.load_sentiment(str(path))
    assert [len(splits[s][1]) for s in loaders.SPLITS] == [32, 4, 4]
    assert [t[1] for t in splits["validation"][0]] == ["8", "18", "28", "38"]  # fold 8

    hub = tmp_path / "hub"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"sentence": [f"w{i}" for i in range(20)], "y": [i % 2 for i in range(20)]}
            ),
            "test": datasets.Dataset.from_dict({"sentence": ["a", "b"], "y": [0, 1]}),
        }
    ).save_to_disk(str(hub))
    splits = loaders.load_sentiment(str(hub), text_column="sentence", label_column="y")
    assert [len(splits[s][1]) for s in loaders.SPLITS] == [18, 2, 2]  # validation carved from train
    with pytest.raises(ValueError, match="no column 'text'"):
        loaders.load_sentiment(str(hub))


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    assert loaders.parse_conllu(CONLLU.splitlines()) == [
        (["The", "cat", "sat", "."], ["DET", "NOUN", "VERB", "PUNCT"]),
        (["do", "n't", "go"], ["AUX", "PART", "VERB"]),
    ]
    path = tmp_path / "x-ud-train.conllu"
    path.write_text(CONLLU)
    assert len(loaders.load_conllu(str(path))) == 2
    with pytest.raises(ValueError, match="10 tab-separated fields"):
        loaders.parse_conllu(["1\tbroken line"])


def test_conllu_from_a_hub_style_dataset_with_class_labels(tmp_path):
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "upos": datasets.Sequence(datasets.ClassLabel(names=["NOUN", "VERB"])),
        }
    )
    table = datasets.Dataset.from_dict({"tokens": [["dogs", "bark"]], "upos": [[0, 1]]}, features=features)
    datasets.DatasetDict({"train": table, "validation": table, "test": table}).save_to_disk(str(tmp_path / "ud"))
    assert loaders.load_conllu(str(tmp_path / "ud"), split="test") == [(["dogs", "bark"], ["NOUN", "VERB"])]


def test_load_series_keeps_gaps(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("date,value\n1,1.5\n2,\n3,2.5\n")
    values = loaders.load_series(str(path), "value")
    assert np.isnan(values[1]) and values[2] == 2.5
    with pytest.raises(ValueError, match="no column 'volume'"):
        loaders.load_series(str(path), "volume")


def test_hub_name_offline_error():
    with pytest.raises(FileNotFoundError, match="save_to_disk"):
        loaders.load_sentiment("someone/no_such_sentiment_data")


# -- models and losses ------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_final_readout_is_the_head_on_the_last_real_state(bidirectional):
    """Left padding and the "final" readout give, per sequence, what the per-step model gives
    at the last step of the unpadded sequence (the backward half: at its first step)."""
    kwargs = dict(vocab_size=7, hidden_size=5, output_size=3, stack=StackOptions(bidirectional=bidirectional))
    final = SequenceModel(make_cell("lstm"), readout="final", rngs=nnx.Rngs(0), **kwargs)
    steps = SequenceModel(make_cell("lstm"), rngs=nnx.Rngs(0), **kwargs)
    sequences = [np.array([1, 2, 3, 4]), np.array([5, 6])]
    ids, mask = pad(sequences, 6, side="left")
    logits, _ = final(jnp.asarray(ids), mask=jnp.asarray(mask))
    for row, sequence in enumerate(sequences):
        _, carries = steps(jnp.asarray(sequence)[None])
        top = carries[-1] if bidirectional else [carries[-1]]  # the final states h, read from the carries
        expected = steps.head(jnp.concatenate([c.h for c in top], axis=-1))[0]
        np.testing.assert_allclose(logits[row], expected, atol=1e-5)
        if not bidirectional:
            per_step, _ = steps(jnp.asarray(sequence)[None])
            np.testing.assert_allclose(logits[row], per_step[0, -1], atol=1e-5)


def test_one_step_rnn_is_an_mlp():
    """One step from a zero state: h = tanh(x W_xh + b) (W_hh multiplies zeros), y = W_hy h + b_y."""
    model = SequenceModel(
        make_cell("rnn"), input_size=4, hidden_size=6, output_size=3, readout="final", rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(jax.random.key(1), (5, 4))
    params = model.rnn.layers[0].forward
    hidden_layer = nnx.Linear(4, 6, rngs=nnx.Rngs(2))
    output_layer = nnx.Linear(6, 3, rngs=nnx.Rngs(3))
    hidden_layer.kernel[...], hidden_layer.bias[...] = params["W_xh"][...], params["b"][...]
    output_layer.kernel[...], output_layer.bias[...] = model.head.kernel[...], model.head.bias[...]
    mlp = output_layer(jnp.tanh(hidden_layer(x)))
    logits, _ = model(x[:, None, :])
    np.testing.assert_allclose(logits, mlp, atol=1e-6)


def test_task_losses_respect_masks_and_weights():
    model = SequenceModel(make_cell("gru"), vocab_size=5, hidden_size=4, output_size=5, rngs=nnx.Rngs(0))
    ids = jnp.array([[1, 2, 3, 0], [4, 1, 0, 0]])
    mask = ids > 0
    batch = {"inputs": ids, "targets": ids, "mask": mask}
    logits, _ = model(ids, mask=mask)
    out = sequence_cross_entropy(logits, batch)
    assert apply(sequence_cross_entropy, model, batch).loss == out.loss  # the model read the batch's mask
    logp = jax.nn.log_softmax(logits)
    per_step = -jnp.take_along_axis(logp, ids[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.loss, per_step[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(out.final_step_loss, (per_step[0, 2] + per_step[1, 1]) / 2, rtol=1e-5)

    regressor = SequenceModel(make_cell("lstm"), input_size=2, hidden_size=4, output_size=1, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(0), (2, 3, 2))
    targets = jnp.ones((2, 3))
    weights = jnp.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    outputs, _ = regressor(xs)
    loss = sequence_mse(outputs, {"inputs": xs, "targets": targets, "weights": weights}).loss
    np.testing.assert_allclose(loss, ((outputs[..., 0] - 1) ** 2 * weights).sum() / 3, rtol=1e-5)


def test_many_to_one_flow_is_zero_on_padding():
    model = SequenceModel(
        make_cell("lstm"), vocab_size=6, hidden_size=4, output_size=2, readout="final", rngs=nnx.Rngs(0)
    )
    ids, mask = pad([np.array([1, 2, 3, 4, 5]), np.array([2, 3])], 5, side="left")
    batch = {"inputs": jnp.asarray(ids), "mask": jnp.asarray(mask), "targets": jnp.array([0, 1])}
    graphdef, params = nnx.split(model)
    _, grads, flow = grads_and_flow(classification_cross_entropy, graphdef, params, batch, None)
    by_lag = np.asarray(flow["by_lag"]["layer0/h"])
    single = {"inputs": jnp.asarray(ids[:1]), "mask": jnp.asarray(mask[:1]), "targets": jnp.array([0])}
    _, _, flow_first = grads_and_flow(classification_cross_entropy, graphdef, params, single, None)
    # lags 2-4 exist only in the first sequence: the padded one adds nothing there (the loss is a
    # batch mean, so the first sequence's gradient is halved)
    np.testing.assert_allclose(by_lag[2:], np.asarray(flow_first["by_lag"]["layer0/h"])[2:] / 2, rtol=1e-5)
    assert np.all(by_lag > 0)
