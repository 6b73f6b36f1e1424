"""Distributions of interest: the points z at which gradients are averaged, and their weights.

``linear``: the straight path z(α) = b + α (x − b), α ∈ [0, 1], integrated with a quadrature
rule; every rule's weights sum to 1, so that Σ_k w_k ∂Q/∂z(α_k) approximates
∫₀¹ ∂Q/∂z(α) dα (integrated gradients, Sundararajan et al. 2017). ``gaussian``: z = x + ε,
ε ~ N(0, noise²), drawn per sample from (seed, the sample's position), so the draws do not
depend on the batch size (SmoothGrad, Smilkov et al. 2017).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from .. import _validate as v

Rule = Literal[
    "gausslegendre",
    "trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "uniform",
]
RULES = get_args(Rule)  # checked at the call


def quadrature(steps: int, rule: Rule = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Nodes α_k in [0, 1] and weights w_k (Σ w_k = 1) of a rule with ``steps`` points.

    - ``"gausslegendre"``: Gauss–Legendre on [0, 1] (exact for polynomials of degree
      ``2·steps − 1`` in α).
    - ``"trapezoid"``: the composite trapezoid rule on ``linspace(0, 1, steps)``: weights
      h/2, h, …, h, h/2 with h = 1/(steps − 1) (Captum's "riemann_trapezoid" weights sum to
      1 − 1/steps instead; not copied). ``steps = 1`` is the midpoint.
    - ``"riemann_left"`` / ``"riemann_right"`` / ``"riemann_middle"``: α = k/steps, (k+1)/steps,
      (k+½)/steps for k = 0 … steps − 1, weights 1/steps.
    - ``"uniform"``: netlens's closed grid ``linspace(0, 1, steps)`` with equal weights 1/steps
      (to reproduce its numbers; it counts both end points fully). ``steps = 1`` is the point
      α = 1 (the gradient at x, as TruLens's ``LinearDoi(resolution=1)``), not the baseline.

    Raises
    ------
    ValueError
        On an unknown ``rule`` or ``steps`` not a positive int.

    Examples
    --------
    >>> from tmx import attribution as A
    >>> nodes, weights = A.quadrature(3, "trapezoid")
    >>> nodes.tolist(), weights.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    >>> nodes, weights = A.quadrature(2)                           # Gauss–Legendre
    >>> nodes.round(4).tolist(), weights.tolist()
    ([0.2113, 0.7887], [0.5, 0.5])
    >>> A.RULES[:2]
    ('gausslegendre', 'trapezoid')
    """
    steps = v.positive_int(steps, "steps")
    v.choice(rule, "rule", RULES)
    k = np.arange(steps, dtype=np.float64)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if rule == "trapezoid":
        if steps == 1:
            return np.array([0.5]), np.array([1.0])
        h = 1.0 / (steps - 1)
        weights = np.full(steps, h)
        weights[[0, -1]] = h / 2.0
        return np.linspace(0.0, 1.0, steps), weights
    if rule == "uniform":
        if steps == 1:  # the gradient at x, not at the baseline
            return np.array([1.0]), np.array([1.0])
        return np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (k + offset) / steps, np.full(steps, 1.0 / steps)


def check_noise(noise: Any) -> float:
    """The standard deviation of a noise distribution of interest: a finite float ≥ 0."""
    noise = v.finite_real(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be a standard deviation >= 0; got {noise}")
    return noise


def draws(
    kind: Literal["normal", "uniform"],
    shape: tuple[int, ...],
    positions: np.ndarray,
    samples: int,
    scale: float,
    seed: int,
) -> np.ndarray:
    """``(len(positions), samples, *shape)`` float32 draws: N(0, scale²) (``"normal"``) or
    uniform on [−scale, scale] (``"uniform"``).

    The draws of the sample at position p come from ``numpy.random.default_rng([seed, p])``
    alone, so they are the same whatever batch or order the sample is processed in.
    """
    out = np.empty((len(positions), samples, *shape), np.float32)
    for row, p in enumerate(np.asarray(positions, dtype=np.int64)):
        rng = np.random.default_rng([int(seed), int(p)])
        if kind == "normal":  # float32 draws straight into the output, then scaled
            rng.standard_normal(dtype=np.float32, out=out[row])
            out[row] *= np.float32(scale)
        else:
            out[row] = rng.uniform(-scale, scale, size=(samples, *shape))
    return out


def gaussian_doi_draws(
    shape: tuple[int, ...], positions: np.ndarray, samples: int, noise: float, seed: int
) -> np.ndarray:
    """The gaussian distribution of interest's ``(len(positions), samples, *shape)`` draws
    ε ~ N(0, noise²), around which ``doi="gaussian"`` averages gradients (z = x + ε).

    Not ``tmx.transforms.gaussian_noise`` (a transformation set adding noise to inputs).
    """
    return draws("normal", shape, positions, samples, noise, seed)
