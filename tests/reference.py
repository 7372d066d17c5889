"""Independent NumPy references of the cells, written gate by gate from the equations
(float64, no shared code with rnn_jax), and a per-step loop to run them over a sequence."""

import numpy as np

ACTIVATIONS = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "linear": lambda a: a}


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def gate(params, name, k, hidden):
    """Slice gate k of the fused (…, G * hidden) weights: W_x, W_h, b of that gate."""
    sl = slice(k * hidden, (k + 1) * hidden)
    return params["W_xh"][:, sl], params["W_hh"][:, sl], params["b"][sl]


def rnn_step(params, h, x, activation="tanh"):
    hidden = h.shape[-1]
    w_x, w_h, b = gate(params, "h", 0, hidden)
    h = ACTIVATIONS[activation](x @ w_x + h @ w_h + b)
    return h, h


def lstm_step(params, carry, x):
    c, h = carry
    hidden = h.shape[-1]
    pre = {}
    for k, name in enumerate("ifgo"):
        w_x, w_h, b = gate(params, name, k, hidden)
        pre[name] = x @ w_x + h @ w_h + b
    i, f, o = sigmoid(pre["i"]), sigmoid(pre["f"]), sigmoid(pre["o"])
    g = np.tanh(pre["g"])
    c = f * c + i * g
    h = o * np.tanh(c)
    return (c, h), h


def gru_step(params, h, x, reset_after=True):
    hidden = h.shape[-1]
    w_xr, w_hr, b_r = gate(params, "r", 0, hidden)
    w_xz, w_hz, b_z = gate(params, "z", 1, hidden)
    w_xn, w_hn, b_n = gate(params, "n", 2, hidden)
    r = sigmoid(x @ w_xr + h @ w_hr + b_r)
    z = sigmoid(x @ w_xz + h @ w_hz + b_z)
    if reset_after:
        candidate = np.tanh(x @ w_xn + b_n + r * (h @ w_hn + params["b_hn"]))
    else:
        candidate = np.tanh(x @ w_xn + b_n + (r * h) @ w_hn)
    h = (1.0 - z) * h + z * candidate
    return h, h


def run(step, params, xs, carry, reverse=False):
    """xs: (batch, time, input) -> (final carry, ys (batch, time, hidden)), a Python loop."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    carry = (
        tuple(np.asarray(c, np.float64) for c in carry) if isinstance(carry, tuple) else np.asarray(carry, np.float64)
    )
    xs = np.asarray(xs, np.float64)
    times = range(xs.shape[1])
    ys = [None] * xs.shape[1]
    for t in reversed(times) if reverse else times:
        carry, ys[t] = step(params, carry, xs[:, t])
    return carry, np.stack(ys, axis=1)


# Greff et al. 2017 variants: (gates present, peepholes, tanh on g, tanh on c, f = 1 - i, full gate recurrence)
LSTM_VARIANTS = {
    "standard": ("ifgo", False, True, True, False, False),
    "vanilla": ("ifgo", True, True, True, False, False),
    "NIG": ("fgo", True, True, True, False, False),
    "NFG": ("igo", True, True, True, False, False),
    "NOG": ("ifg", True, True, True, False, False),
    "NIAF": ("ifgo", True, False, True, False, False),
    "NOAF": ("ifgo", True, True, False, False, False),
    "NP": ("ifgo", False, True, True, False, False),
    "CIFG": ("igo", True, True, True, True, False),
    "FGR": ("ifgo", True, True, True, False, True),
    "1997": ("igo", False, True, True, False, False),
}


def lstm_variant_step(params, carry, x, variant):
    gates, peepholes, input_act, output_act, coupled, full_recurrence = LSTM_VARIANTS[variant]
    c, h = carry[0], carry[1]
    hidden = h.shape[-1]
    pre = {}
    for k, name in enumerate(gates):
        w_x, w_h, b = gate(params, name, k, hidden)
        pre[name] = x @ w_x + h @ w_h + b
    if full_recurrence:
        previous_gates = carry[2] @ params["W_gg"]
        for k, name in enumerate("ifo"):
            pre[name] = pre[name] + previous_gates[:, k * hidden : (k + 1) * hidden]
    if peepholes:
        for name in "if":
            if name in pre:
                pre[name] = pre[name] + params["p_" + name] * c
    i = sigmoid(pre["i"]) if "i" in pre else np.ones_like(c)
    f = 1.0 - i if coupled else (sigmoid(pre["f"]) if "f" in pre else np.ones_like(c))
    g = np.tanh(pre["g"]) if input_act else pre["g"]
    c = f * c + i * g
    o = sigmoid(pre["o"] + (params["p_o"] * c if peepholes else 0.0)) if "o" in pre else np.ones_like(c)
    h = o * (np.tanh(c) if output_act else c)
    if full_recurrence:
        return (c, h, np.concatenate([i, f, o], axis=-1)), h
    return (c, h), h


def mingru_step(params, h, x):
    hidden = h.shape[-1]
    w_z, b_z = params["W_xh"][:, :hidden], params["b"][:hidden]
    w_h, b_h = params["W_xh"][:, hidden:], params["b"][hidden:]
    z = sigmoid(x @ w_z + b_z)
    h = (1.0 - z) * h + z * (x @ w_h + b_h)
    return h, h


def minlstm_step(params, h, x):
    hidden = h.shape[-1]
    w = [params["W_xh"][:, k * hidden : (k + 1) * hidden] for k in range(3)]
    b = [params["b"][k * hidden : (k + 1) * hidden] for k in range(3)]
    f, i = sigmoid(x @ w[0] + b[0]), sigmoid(x @ w[1] + b[1])
    h = f / (f + i) * h + i / (f + i) * (x @ w[2] + b[2])
    return h, h


def lru_step(params, h, x):
    """h = [Re; Im] of the complex state; complex arithmetic with NumPy's complex numbers. lambda
    from (nu_log, theta_log), or (lam_re, lam_im) directly; gamma = exp(gamma_log), or 1 without it."""
    hidden = h.shape[-1] // 2
    state = h[..., :hidden] + 1j * h[..., hidden:]
    if "lam_re" in params:
        lam = params["lam_re"] + 1j * params["lam_im"]
    else:
        lam = np.exp(-np.exp(params["nu_log"]) + 1j * np.exp(params["theta_log"]))
    gamma = np.exp(params["gamma_log"]) if "gamma_log" in params else 1.0
    bx = x @ params["W_xh"]
    state = lam * state + gamma * (bx[..., :hidden] + 1j * bx[..., hidden:])
    c = params["C_re"] + 1j * params["C_im"]
    d = params["D"]
    y = (state @ c.T).real + (d * x if d.ndim == 1 else x @ d)  # D diagonal, or dense for a narrower input
    return np.concatenate([state.real, state.imag], axis=-1), y


def pascanu_omega_authors(w_xh, w_hh, b, w_hy, b_y, xs, targets, bound=1e-20):
    """Pascanu et al.'s Omega and its W_hh gradient as pascanur/trainingRNNs' ``RNN.py`` computes
    them for a tanh RNN h_k = tanh(h_(k-1) W_hh + x_k W_xh + b), h_0 = 0, read out from h_T with
    the loss mean_b (h_T W_hy + b_y - target)^2: d_k = dE/dh_k by backpropagation through time,
    u_k = (d_k (1 - h_k^2)) W_hh^T, Omega = sum over valid (k, b) of (|u|^2 / |d|^2 - 1)^2 / valid
    count (valid: |d|^2 >= bound), k = 1..T; its gradient in W_hh with d and h constant:
    2 (r - 1) * 2 a^T u / |d|^2 per pair, a = d (1 - h_k^2). xs: (batch, T, input)."""
    batch, steps, _ = xs.shape
    hs = [np.zeros((batch, w_hh.shape[0]))]
    for k in range(steps):
        hs.append(np.tanh(hs[-1] @ w_hh + xs[:, k] @ w_xh + b))
    error = (hs[-1] @ w_hy + b_y)[:, 0] - targets
    d = [None] * (steps + 1)
    d[steps] = (2.0 / batch) * error[:, None] * w_hy[:, 0][None, :]
    for k in range(steps, 1, -1):
        d[k - 1] = (d[k] * (1 - hs[k] ** 2)) @ w_hh.T
    omega, grad, valid = 0.0, np.zeros_like(w_hh), 0
    for k in range(1, steps + 1):
        a = d[k] * (1 - hs[k] ** 2)
        u = a @ w_hh.T
        for row in range(batch):
            d_sq = np.sum(d[k][row] ** 2)
            if d_sq < bound:
                continue
            r = np.sum(u[row] ** 2) / d_sq
            omega += (r - 1) ** 2
            # d|u|^2/dW_ij = 2 u_i a_j  (u_i = sum_j W_ij a_j)
            grad += 2 * (r - 1) * 2 * np.outer(u[row], a[row]) / d_sq
            valid += 1
    return omega / valid, grad / valid
