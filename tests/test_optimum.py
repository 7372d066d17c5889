"""The Hessian at the optimum (`rnn_jax.optimum`, Zucchet & Orvieto's Figure 4), float64: each
student set to the teacher fits it exactly and equals the library's own cell with those weights;
its Hessian is the Gauss-Newton matrix computed apart (Jacobian by forward mode); the analysis's
numbers are NumPy's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import make_cell, run
from rnn_jax.optimum import analyse, hand_teacher, outputs, students_at_optimum


@pytest.fixture
def setting(x64):
    a, b, c, d = hand_teacher(3)
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(6, 80)))
    return (a, b, c, d), xs, outputs("rnn", {"A": a, "B": b[:, 0], "C": c[0], "D": d[0]}, xs)


def test_the_teacher_is_two_conjugate_pairs_near_the_unit_circle(setting):
    (a, *_), _, _ = setting
    lam = np.linalg.eigvals(a)
    assert np.isrealobj(a) and np.all((np.abs(lam) >= 0.99) & (np.abs(lam) < 0.993))
    np.testing.assert_allclose(np.sort_complex(lam), np.sort_complex(lam.conj()), atol=1e-12)


def test_each_student_is_the_teacher_and_the_librarys_cell(setting):
    (a, b, c, d), xs, targets = setting
    students = students_at_optimum(a, b, c, d)
    for name, p in students.items():
        np.testing.assert_allclose(outputs(name, p, xs), targets, atol=1e-10)
    # the library's cells with the same weights: the linear rnn (h @ W_hh), the plain LRU (output 0 of 4)
    rnn = make_cell("rnn", activation="linear")
    weights = {"W_xh": b.T, "W_hh": a.T, "b": np.zeros(4)}
    states = run(rnn, jax.tree.map(jnp.asarray, weights), xs[..., None])[1]
    np.testing.assert_allclose(states @ c[0] + d[0] * xs, targets, atol=1e-10)
    for name, options in (("diagonal", dict(parametrisation="direct", normalise=False)), ("lru", {})):
        p = students[name]
        cell = make_cell("lru", **options)
        recurrence = {k: p[k] for k in ("lam_re", "lam_im", "nu_log", "theta_log", "gamma_log") if k in p}
        first_row = lambda v: np.pad(v[None], ((0, 3), (0, 0)))  # noqa: E731  (the other outputs: zero)
        weights = {
            "W_xh": np.concatenate([p["B_re"], p["B_im"]])[None],
            **recurrence,
            "C_re": first_row(p["C_re"]),
            "C_im": first_row(p["C_im"]),
            "D": np.pad(p["D"][None], ((0, 0), (0, 3))),
        }
        ys = run(cell, jax.tree.map(jnp.asarray, weights), xs[..., None])[1]
        np.testing.assert_allclose(ys[..., 0], targets, atol=1e-10)


def test_the_hessian_is_the_gauss_newton_matrix_and_its_analysis_numpys(setting):
    (a, b, c, d), xs, targets = setting
    for name, p in students_at_optimum(a, b, c, d).items():
        result = analyse(name, p, xs, targets, top=4)
        theta, unravel = jax.flatten_util.ravel_pytree(jax.tree.map(jnp.asarray, p))
        jacobian = np.asarray(jax.jacfwd(lambda t: outputs(name, unravel(t), xs).ravel())(theta))
        gauss_newton = 2 * jacobian.T @ jacobian / targets.size  # residuals 0: H = (2 / N) J^T J
        expected = np.linalg.eigvalsh(gauss_newton)[::-1]
        np.testing.assert_allclose(result["eigenvalues"], expected, rtol=1e-8, atol=1e-8 * expected[0])
        vectors = np.linalg.eigh(gauss_newton)[1][:, ::-1][:, :4]
        np.testing.assert_allclose(result["effective_coordinates"], 1 / np.sum(vectors**4, axis=0), rtol=1e-6)
        assert result["loss"] < 1e-20
        assert all(top <= result["eigenvalues"][0] * (1 + 1e-12) for top in result["group_top"].values())
        shares = np.sum([result["group_share"][g] for g in result["group_share"]], axis=0)
        np.testing.assert_allclose(shares, 1.0, atol=1e-12)
