"""Independent NumPy (float64) reference for fixed points, stability, flip-flop
targets and Lyapunov exponents, written from the papers' equations alone.

References: Gers, Schmidhuber & Cummins 2000 (LSTM with forget gate); Cho et al.
2014 / cuDNN (GRU, "reset after"); Sussillo & Barak 2013, "Opening the black
box"; Golub & Sussillo 2018, FixedPointFinder; Benettin et al. 1980.
"""

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_step(params, c, h, x):
    """LSTM with forget gate (Gers et al. 2000), row-vector convention.

    z = x W_xh + h W_hh + b, blocks [i, f, g, o];
    c' = sigmoid(z_f) * c + sigmoid(z_i) * tanh(z_g);  h' = sigmoid(z_o) * tanh(c').
    """
    z = x @ params["W_xh"] + h @ params["W_hh"] + params["b"]
    zi, zf, zg, zo = np.split(z, 4)
    c_new = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
    return c_new, _sigmoid(zo) * np.tanh(c_new)


def gru_step(params, h, x):
    """GRU, "reset after" (cuDNN) form, gates [r, z, n]; z weights the NEW candidate.

    r = s(xw_r + hw_r), z = s(xw_z + hw_z), n = tanh(xw_n + r * (hw_n + b_hn)),
    h' = (1 - z) * h + z * n, with xw = x W_xh + b and hw = h W_hh.
    """
    xr, xz, xn = np.split(x @ params["W_xh"] + params["b"], 3)
    hr, hz, hn = np.split(h @ params["W_hh"], 3)
    r = _sigmoid(xr + hr)
    z = _sigmoid(xz + hz)
    n = np.tanh(xn + r * (hn + params["b_hn"]))
    return (1.0 - z) * h + z * n


def rnn_step(params, h, x):
    """Elman RNN: h' = tanh(x W_xh + h W_hh + b)."""
    return np.tanh(x @ params["W_xh"] + h @ params["W_hh"] + params["b"])


def numerical_jacobian(f, v, eps=1e-6):
    """Central differences: J[i, j] = (f_i(v + eps e_j) - f_i(v - eps e_j)) / (2 eps)."""
    v = np.asarray(v, dtype=np.float64)
    cols = []
    for j in range(v.size):
        e = np.zeros_like(v)
        e[j] = eps
        cols.append((np.asarray(f(v + e)) - np.asarray(f(v - e))) / (2.0 * eps))
    return np.stack(cols, axis=1)


def newton_fixed_point(f, v0, tol=1e-13, max_iter=100):
    """Newton's method for F(v) = f(v) - v = 0: solve (J - I) dv = -(f(v) - v).

    J is the central-difference Jacobian from `numerical_jacobian` (an O(eps^2)
    error only slows the final quadratic convergence, not the fixed point found).
    Converged when ||f(v) - v||_inf < tol. Returns (v, q) with Sussillo & Barak's
    q(v) = 0.5 * ||f(v) - v||^2. Raises RuntimeError if not converged.
    """
    v = np.array(v0, dtype=np.float64)
    eye = np.eye(v.size)
    for _ in range(max_iter):
        res = np.asarray(f(v)) - v
        if np.max(np.abs(res)) < tol:
            return v, 0.5 * float(res @ res)
        v = v + np.linalg.solve(numerical_jacobian(f, v) - eye, -res)
    res = np.asarray(f(v)) - v
    raise RuntimeError(f"Newton did not converge: ||f(v) - v||_inf = {np.max(np.abs(res)):.3e}")


def fixed_point_stability(f, v):
    """Linear stability of a fixed point of a discrete map (Sussillo & Barak 2013).

    Returns (eigvals of df/dv at v, stable = all |eig| < 1, unstable_modes = #|eig| > 1).
    """
    eig = np.linalg.eigvals(numerical_jacobian(f, v))
    mod = np.abs(eig)
    return eig, bool(np.all(mod < 1.0)), int(np.sum(mod > 1.0))


def flipflop_targets(inputs):
    """3-bit flip-flop targets (Sussillo & Barak 2013; FixedPointFinder FlipFlopData).

    inputs (batch, time, bits) in {-1, 0, +1}; the target of a bit at t is its last
    non-zero input at or before t, and 0 before that bit's first pulse.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    targets = np.zeros_like(inputs)
    n_batch, n_time, n_bits = inputs.shape
    for trial in range(n_batch):
        for bit in range(n_bits):
            state = 0.0
            for t in range(n_time):
                if inputs[trial, t, bit] != 0:
                    state = inputs[trial, t, bit]
                targets[trial, t, bit] = state
    return targets


def lyapunov_two_trajectories(step, v0, xs, d0=1e-8, renormalise_every=1, transient=0):
    """Leading Lyapunov exponent by two nearby trajectories (Benettin et al. 1980).

    lambda = (1 / (T - transient)) * sum_k log(d_k / d0), where d_k is the separation
    measured every `renormalise_every` counted steps (and at the last step), after
    which the perturbed state is reset to v + d0 * (separation / d). During the first
    `transient` steps the pair is renormalised every step and nothing is counted.
    `step(v, x)` maps flat state vectors; the initial perturbation direction is a
    fixed unit vector from numpy.random.default_rng(0).
    """
    v = np.array(v0, dtype=np.float64)
    u = np.random.default_rng(0).standard_normal(v.size)
    w = v + d0 * u / np.linalg.norm(u)
    n_steps = len(xs)
    if n_steps <= transient:
        raise ValueError("need more steps than the transient")
    total = 0.0
    for n, x in enumerate(xs, start=1):
        v = np.asarray(step(v, x), dtype=np.float64)
        w = np.asarray(step(w, x), dtype=np.float64)
        counted = n > transient
        if not counted or (n - transient) % renormalise_every == 0 or n == n_steps:
            sep = w - v
            d = np.linalg.norm(sep)
            if counted:
                total += np.log(d / d0)
            w = v + d0 * sep / d
    return total / (n_steps - transient)


if __name__ == "__main__":
    rng = np.random.default_rng(1)

    # (a) linear map f(v) = A v + b, spectral radius < 1.
    A = rng.standard_normal((4, 4))
    A *= 0.8 / np.max(np.abs(np.linalg.eigvals(A)))
    b = rng.standard_normal(4)

    def lin(v):
        return A @ v + b

    v, q = newton_fixed_point(lin, np.zeros(4))
    assert np.allclose(v, np.linalg.solve(np.eye(4) - A, b), atol=1e-12), v
    eig, stable, n_unstable = fixed_point_stability(lin, v)
    assert np.allclose(np.sort_complex(eig), np.sort_complex(np.linalg.eigvals(A)), atol=1e-8)
    assert stable and n_unstable == 0
    print(f"(a) linear: fixed point ok, q = {q:.2e}, eigenvalues match A")

    # (b) v -> tanh(diag(2, 0.5) v): stable (+-a, 0) with a = tanh(2a); saddle at 0.
    D = np.diag([2.0, 0.5])

    def g(v):
        return np.tanh(D @ v)

    for sign in (1.0, -1.0):
        v, q = newton_fixed_point(g, np.array([sign * 0.8, 0.1]))
        a = v[0]
        assert abs(a - np.tanh(2 * a)) < 1e-13 and abs(abs(a) - 0.9575) < 1e-4 and abs(v[1]) < 1e-13
        _, stable, n_unstable = fixed_point_stability(g, v)
        assert stable and n_unstable == 0
        print(f"(b) fixed point ({a:+.12f}, {v[1]:.1e}), q = {q:.1e}, stable")
    v, q = newton_fixed_point(g, np.array([0.1, -0.1]))
    eig, stable, n_unstable = fixed_point_stability(g, v)
    assert np.allclose(v, 0.0, atol=1e-13) and not stable and n_unstable == 1
    assert np.allclose(np.sort(eig.real), [0.5, 2.0], atol=1e-8)
    print(f"(b) fixed point (0, 0): eigenvalues {np.sort(eig.real)}, 1 unstable mode")

    # (c) Lyapunov exponent of linear maps with a real dominant eigenvalue: a
    # contracting one driven by inputs, and an expanding one about its fixed point 0.
    P = rng.standard_normal((3, 3))
    for lead, drive in ((-0.9, 1.0), (1.3, 0.0)):
        B = P @ np.diag([lead, 0.5, 0.2]) @ np.linalg.inv(P)

        def step(v, x):
            return B @ v + x

        xs = drive * rng.standard_normal((2000, 3))
        for every in (1, 7):
            lam = lyapunov_two_trajectories(step, np.zeros(3), xs, renormalise_every=every, transient=100)
            assert abs(lam - np.log(abs(lead))) < 1e-6, (lam, np.log(abs(lead)))
            print(
                f"(c) lead eig {lead:+.1f}, renormalise_every={every}: "
                f"lambda = {lam:+.10f}, log|lead| = {np.log(abs(lead)):+.10f}"
            )

    # (d) flip-flop targets on a hand-written example (1 trial, 6 steps, 3 bits).
    inp = np.array([[[0, 0, 0], [1, 0, 0], [0, -1, 0], [0, 0, 0], [-1, 0, 1], [0, 1, 0]]])
    want = np.array([[[0, 0, 0], [1, 0, 0], [1, -1, 0], [1, -1, 0], [-1, -1, 1], [-1, 1, 1]]])
    assert np.array_equal(flipflop_targets(inp), want)
    print("(d) flip-flop targets ok")
    print("all self-checks passed")
