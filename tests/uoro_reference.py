"""A NumPy UORO (Tallec & Ollivier 2017, Algorithm 1) of the tanh RNN, written from the paper
alone by a helper that did not read rnn_jax (its Jacobians by hand; eps placement as in the
paper and the public `uoro_demo` code). Its own checks (not kept here): BPTT by hand against
finite differences to 1.5e-10 relative, and the mean of 20,000 estimates within sampling
error of the true gradient (|mean - true| / SE at most 2.1).

One step, from t-1 to t, per sequence, the estimator (s~, theta~) standing for d s_(t-1) / d theta:
  the step's gradient  g_t = (dl_t/ds_(t-1) . s~) theta~ + dl_t/dtheta   (the estimator before the update)
  then, with nu = nus[t]:
    rho0 = sqrt((|theta~| + eps) / (|dF/ds s~| + eps)),  rho1 = sqrt((|nu^T dF/dtheta| + eps) / (|nu| + eps))
    s~ <- rho0 dF/ds s~ + rho1 nu,   theta~ <- theta~ / rho0 + nu^T dF/dtheta / rho1
s_(-1) = 0, s~ = 0, theta~ = 0. Hand Jacobians of s_t = tanh(a_t), a_t = x_t w_x + s_(t-1) w_h + b,
d_t = 1 - s_t^2: dF/ds v = d_t * (v w_h); u^T dF/dw_x = outer(x_t, u d_t); u^T dF/dw_h =
outer(s_(t-1), u d_t); u^T dF/db = u d_t.
"""

import numpy as np

# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _flat(gwx, gwh, gb):
    """Per-sequence flat parameter vectors, (batch, P), order (w_x, w_h, b), C order."""
    n = gwx.shape[0]
    return np.concatenate([gwx.reshape(n, -1), gwh.reshape(n, -1), gb.reshape(n, -1)], axis=1)


def _unflat(v, n_in, n_h):
    """Inverse of _flat for a (batch, P) array."""
    n = v.shape[0]
    i1 = n_in * n_h
    i2 = i1 + n_h * n_h
    return (v[:, :i1].reshape(n, n_in, n_h), v[:, i1:i2].reshape(n, n_h, n_h), v[:, i2:].reshape(n, n_h))


# ----------------------------------------------------------------------------------------
# UORO
# ----------------------------------------------------------------------------------------


def numpy_uoro_per_sequence(w_x, w_h, b, xs, nus, eps=1e-7):
    """Same as numpy_uoro but returns the per-sequence estimates (not summed over sequences):
    dict(W_xh=(batch,input,hidden), W_hh=(batch,hidden,hidden), b=(batch,hidden))."""
    w_x = np.asarray(w_x, dtype=np.float64)
    w_h = np.asarray(w_h, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)
    nus = np.asarray(nus, dtype=np.float64)
    n, T, n_in = xs.shape
    n_h = w_h.shape[0]
    assert w_x.shape == (n_in, n_h) and w_h.shape == (n_h, n_h) and b.shape == (n_h,)
    assert nus.shape == (T, n, n_h), nus.shape
    P = n_in * n_h + n_h * n_h + n_h

    s_prev = np.zeros((n, n_h))  # s_(-1) = 0
    s_tilde = np.zeros((n, n_h))  # estimator, per sequence
    theta_tilde = np.zeros((n, P))
    grad = np.zeros((n, P))

    for t in range(T):
        x = xs[:, t]  # (n, in)
        s = np.tanh(x @ w_x + s_prev @ w_h + b)  # F_state = F_out
        d = 1.0 - s * s  # tanh'

        # --- gradient estimate for this step (uses the OLD s_tilde, theta_tilde) ---
        g_o = np.cos(s)  # dl_t/do_t
        ga = g_o * d  # dl_t/da_t
        dl_ds_prev = ga @ w_h.T  # dl_t/ds_(t-1)
        direct = _flat(
            x[:, :, None] * ga[:, None, :],  # dl_t/dw_x (direct)
            s_prev[:, :, None] * ga[:, None, :],  # dl_t/dw_h (direct)
            ga,
        )  # dl_t/db
        coef = np.sum(dl_ds_prev * s_tilde, axis=1)  # (dl_t/ds_(t-1) . s_tilde)
        grad += coef[:, None] * theta_tilde + direct

        # --- estimator update ---
        nu = nus[t]  # (n, h)
        s_tilde_fwd = d * (s_tilde @ w_h)  # dF/ds s_tilde (tangent forward)
        gn = nu * d
        dtheta_g = _flat(
            x[:, :, None] * gn[:, None, :],  # nu^T dF/dtheta
            s_prev[:, :, None] * gn[:, None, :],
            gn,
        )
        rho0 = np.sqrt((np.linalg.norm(theta_tilde, axis=1) + eps) / (np.linalg.norm(s_tilde_fwd, axis=1) + eps))
        rho1 = np.sqrt((np.linalg.norm(dtheta_g, axis=1) + eps) / (np.linalg.norm(nu, axis=1) + eps))
        s_tilde = rho0[:, None] * s_tilde_fwd + rho1[:, None] * nu
        theta_tilde = theta_tilde / rho0[:, None] + dtheta_g / rho1[:, None]

        s_prev = s

    gwx, gwh, gb = _unflat(grad, n_in, n_h)
    return dict(W_xh=gwx, W_hh=gwh, b=gb)


def numpy_uoro(w_x, w_h, b, xs, nus, eps=1e-7):
    """UORO gradient estimate of L = sum_t sum(sin(o_t)) for a batch of independent sequences.
    Model: state s_t = tanh(x_t @ w_x + s_(t-1) @ w_h + b), s_(-1) = 0, and the output at step t
    is o_t = s_t (i.e. in the paper's framing F_out(x_t, s_(t-1), theta) = F_state(x_t, s_(t-1), theta)).
    xs: (batch, time, input). w_x: (input, hidden), w_h: (hidden, hidden), b: (hidden,).
    nus: (time, batch, hidden) the random +-1 vectors nu drawn at each step for each sequence
    (given, so a test can pass the same noise to another implementation).
    Each sequence has its own estimator (s_tilde, theta_tilde), starting at zero; theta is the
    flat vector (w_x.ravel(), w_h.ravel(), b) in that order (C order).
    Returns dict(W_xh=..., W_hh=..., b=...) the gradient estimate summed over steps and sequences.

    Conventions (see module docstring): at each step the gradient contribution
    (dl_t/ds_(t-1) . s_tilde) theta_tilde + dl_t/dtheta is computed with the estimator
    BEFORE it is updated with nus[t]; then
    rho0 = sqrt((||theta_tilde|| + eps) / (||dF/ds s_tilde|| + eps)),
    rho1 = sqrt((||nu^T dF/dtheta|| + eps) / (||nu|| + eps)),
    s_tilde <- rho0 dF/ds s_tilde + rho1 nu, theta_tilde <- theta_tilde/rho0 + nu^T dF/dtheta / rho1.
    Norms are per sequence."""
    per = numpy_uoro_per_sequence(w_x, w_h, b, xs, nus, eps)
    return {k: v.sum(axis=0) for k, v in per.items()}
