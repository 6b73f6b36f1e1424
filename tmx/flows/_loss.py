"""The factor loss of an invertible interpretation flow and the IIN estimate of factor sizes.

Semantics: ``docs/flows.md`` ("Factor loss", "Factor dimensions"); the method is the one of
Esser, Rombach & Ommer (2020), "A Disentangling Invertible Interpretation Network for
Explaining Latent Representations", CVPR, arXiv:2004.13166.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _validate as v
from .._provenance import provenance
from .._validate import str_array

__all__ = ["factor_dimensions", "factor_loss"]

_REFERENCE = "Esser, Rombach & Ommer (2020), arXiv:2004.13166"


# -- factor loss ---------------------------------------------------------------------------------
def _check_dimensions(dimensions: Any) -> tuple[int, ...]:
    dims = v.int_vector(dimensions, "dimensions")
    if any(d < 0 for d in dims):
        raise ValueError(f"dimensions must be non-negative integers; got {list(dims)}")
    return dims


def _is_tf(value: Any) -> bool:
    """A TensorFlow tensor or variable (Keras variables on the TF backend included)."""
    return tf.is_tensor(value) or isinstance(value, tf.Variable) or hasattr(value, "__tf_tensor__")


def _as_float64(value: Any, name: str) -> tf.Tensor:
    if _is_tf(value):
        if not isinstance(value, tf.Tensor | tf.Variable):
            value = tf.convert_to_tensor(value)
        if not (value.dtype.is_floating or value.dtype.is_integer):
            raise ValueError(f"{name} must be real-valued; got dtype {value.dtype.name}")
        return tf.cast(value, tf.float64)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}")
    return tf.convert_to_tensor(arr.astype(np.float64))


def _concrete_value(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array when it is known now (numpy, eager or constant), else None."""
    if not _is_tf(value):
        return np.asarray(value, dtype=np.float64)
    if not isinstance(value, tf.Tensor | tf.Variable):
        value = tf.convert_to_tensor(value)
    if tf.executing_eagerly():
        return np.asarray(value.numpy(), dtype=np.float64)
    static = tf.get_static_value(value)
    return None if static is None else np.asarray(static, dtype=np.float64)


def _check_rho_values(values: np.ndarray) -> None:
    bad = ~(np.isfinite(values) & (values >= 0) & (values < 1))
    if np.any(bad):
        raise ValueError(
            "rho must lie in [0, 1) (1 − ρ² is a variance; ρ = 1 is a degenerate pair, "
            f"never clipped); got {values[bad].reshape(-1)[:5].tolist()}"
        )


def factor_loss(
    z_a: Any,
    z_b: Any,
    logdet_a: Any,
    logdet_b: Any,
    rho: Any,
    dimensions: Sequence[int] | Any,
    *,
    semantics: str = "gyoza",
    reduction: str = "mean",
) -> Any:
    r"""The negative log-likelihood of pairs under the factor model of an interpretation flow.

    With z̃ = T(z) split into contiguous factor blocks of sizes ``dimensions`` (residual first),
    ρ_d the ρ of the factor that dimension d belongs to, and j the log-determinant of T:

    .. math::

        \ell = \tfrac12 \sum_d \tilde z_{a,d}^2
             + \tfrac12 \sum_d \Big[ \frac{(\tilde z_{b,d} - \rho_d \tilde z_{a,d})^2}{1 - \rho_d^2}
                                   + \log(1 - \rho_d^2) \Big] - j_a - j_b

    (``semantics="gyoza"``). ``semantics="iin"`` leaves out the log(1 − ρ_d²) term, as the
    CompVis/iin code does; it does not depend on z, so both have identical gradients. ℓ is
    −log p(z̃_a, z̃_b) − log|det J_a| − log|det J_b| − D·log 2π under z̃_a ~ N(0, I),
    z̃_b | z̃_a ~ N(ρ ⊙ z̃_a, diag(1 − ρ²)) (Esser, Rombach & Ommer 2020, arXiv:2004.13166).

    Everything is computed in float64 whatever the input dtype, with 1 − ρ² as
    (1 − ρ)(1 + ρ): in float32 the ρ → 1 terms lose percents.

    Parameters
    ----------
    z_a, z_b : array-like or tf.Tensor, shape [batch, D]
        T(z) of the pairs' first and second members.
    logdet_a, logdet_b : array-like or tf.Tensor, shape [batch] (or a scalar)
        log|det ∂T/∂z| at z_a and z_b.
    rho : array-like or tf.Tensor, shape [n_factors] or [batch, n_factors]
        ρ per factor in ``dimensions`` order (residual first, usually 0): one row for every
        pair, or one row per pair (``pairs(...).rho``). A scalar is refused, since it would
        also correlate the residual. Every value must lie in [0, 1): anything else is a
        ``ValueError`` naming ``rho`` (never a silent clip). The check is made at once when the
        values are known (numpy, eager tensors, constants, also at ``tf.function`` tracing).
        When ``rho`` is a symbolic tensor inside a ``tf.function``, it is made by
        ``tf.debugging`` assertions instead, which raise ``tf.errors.InvalidArgumentError`` when
        the function runs (and are dropped under XLA); a trainer should validate ρ once,
        eagerly, before training (``pairs`` already does).
    dimensions : sequence of int
        Size of each factor block, residual first; non-negative, summing to D (a
        ``ValueError`` naming ``dimensions`` otherwise). A ``factor_dimensions`` result works.
    semantics : {"gyoza", "iin"}
        With (gyoza 0.3.0) or without (CompVis/iin) the log(1 − ρ²) term.
    reduction : {"mean", "none"}
        The mean over pairs, or one loss per pair.

    Returns
    -------
    tf.Tensor or numpy.float64 or numpy.ndarray
        float64. A ``tf.Tensor`` when any of the array arguments is a TensorFlow tensor or
        variable (differentiable with respect to z_a, z_b and the logdets); otherwise a numpy
        scalar (``"mean"``) or an array of shape [batch] (``"none"``).

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> za, zb = np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])
    >>> rho = np.array([[0.0, 0.5]])  # the residual's ρ is 0, the factor's 0.5
    >>> loss = flows.factor_loss(za, zb, np.zeros(1), np.zeros(1), rho, [1, 1])
    >>> expected = 0.5 * 1.0 + 0.5 * ((1.0 - 0.5) ** 2 / 0.75 + np.log(0.75))
    >>> bool(np.isclose(loss, expected))
    True
    """
    semantics = v.choice(semantics, "semantics", ("gyoza", "iin"))
    reduction = v.choice(reduction, "reduction", ("mean", "none"))
    dims = _check_dimensions(dimensions)
    n_factors, total = len(dims), sum(dims)
    use_tf = any(_is_tf(x) for x in (z_a, z_b, logdet_a, logdet_b, rho))

    za = _as_float64(z_a, "z_a")
    zb = _as_float64(z_b, "z_b")
    ja = _as_float64(logdet_a, "logdet_a")
    jb = _as_float64(logdet_b, "logdet_b")
    r = _as_float64(rho, "rho")

    if za.shape.rank is not None and za.shape.rank != 2:
        raise ValueError(f"z_a must have shape [batch, D]; got {za.shape.as_list()}")
    if not za.shape.is_compatible_with(zb.shape):
        raise ValueError(
            f"z_b must have the shape of z_a {za.shape.as_list()}; got {zb.shape.as_list()}"
        )
    width = za.shape[-1] if za.shape.rank is not None else None
    if width is None:
        width = zb.shape[-1] if zb.shape.rank is not None else None
    if width is not None and width != total:
        raise ValueError(
            f"dimensions must sum to D = {width} (the width of z_a); got {list(dims)} (sum {total})"
        )
    batch = za.shape[0] if za.shape.rank is not None else None
    for name, j in (("logdet_a", ja), ("logdet_b", jb)):
        if j.shape.rank is not None and (
            j.shape.rank > 1 or (j.shape.rank == 1 and not j.shape.is_compatible_with([batch]))
        ):
            raise ValueError(f"{name} must have shape [batch] or be a scalar; got {j.shape}")
    if r.shape.rank is not None and (
        r.shape.rank not in (1, 2)
        or not r.shape[-1:].is_compatible_with([n_factors])
        or (r.shape.rank == 2 and not r.shape[:1].is_compatible_with([batch]))
    ):
        raise ValueError(
            f"rho must have shape [n_factors] or [batch, n_factors] with n_factors = "
            f"{n_factors} (one ρ per factor of dimensions, residual first); got "
            f"{r.shape.as_list()}"
        )

    concrete = _concrete_value(rho)
    if concrete is not None:
        _check_rho_values(concrete)
    else:
        checks = [
            tf.debugging.assert_greater_equal(r, tf.constant(0.0, tf.float64), message="rho < 0"),
            tf.debugging.assert_less(r, tf.constant(1.0, tf.float64), message="rho >= 1"),
        ]
        with tf.control_dependencies(checks):
            r = tf.identity(r)
    if width is None:
        with tf.control_dependencies(
            [tf.debugging.assert_equal(tf.shape(za)[-1], total, message="sum(dimensions) != D")]
        ):
            za = tf.identity(za)

    # ρ per dimension: a gather with a precomputed index (tf.repeat's XLA lowering reshapes
    # to a wrong size for wide layers and large batches; a gather compiles for any width)
    factor_of = tf.constant(np.repeat(np.arange(n_factors, dtype=np.int32), dims), tf.int32)
    r_d = tf.gather(r, factor_of, axis=-1)
    var_b = (1.0 - r_d) * (1.0 + r_d)  # 1 − ρ², without cancellation near ρ = 1
    nll = 0.5 * tf.reduce_sum(tf.square(za), axis=-1) + 0.5 * tf.reduce_sum(
        tf.square(zb - r_d * za) / var_b, axis=-1
    )
    if semantics == "gyoza":
        nll = nll + 0.5 * tf.reduce_sum(tf.math.log(var_b), axis=-1)
    nll = nll - ja - jb
    out = tf.reduce_mean(nll) if reduction == "mean" else nll
    return out if use_tf else out.numpy()


# -- factor dimensions ---------------------------------------------------------------------------
def check_pairs(pairs: Any, coords: tuple[str, ...] = ("factor",)) -> list[str]:
    """Validate a ``tmx.flows.pairs`` Dataset (``a``, ``b`` over (pair, unit), the ``coords``,
    ``factor`` starting with the residual) and return its factor names."""
    if not isinstance(pairs, xr.Dataset):
        raise ValueError(
            f"pairs must be the xarray.Dataset returned by tmx.flows.pairs; got "
            f"{type(pairs).__name__}"
        )
    for name in ("a", "b"):
        if name not in pairs.data_vars or set(pairs[name].dims) != {"pair", "unit"}:
            raise ValueError(f"pairs must have a data variable {name!r} with dims (pair, unit)")
    for name in coords:
        if name not in pairs.coords:
            raise ValueError(f"pairs must have the coordinate {name!r} (see tmx.flows.pairs)")
    factors = [str(f) for f in np.asarray(pairs["factor"].values).reshape(-1)]
    if not factors or factors[0] != "residual":
        raise ValueError(f"pairs.factor must start with 'residual'; got {factors}")
    return factors


def _pairs_arrays(pairs: Any) -> tuple[Any, Any, np.ndarray, list[str]]:
    factors = check_pairs(pairs, ("drawn", "factor"))
    if pairs["drawn"].dims != ("pair",):
        raise ValueError(f"pairs.drawn must lie along pair; got {pairs['drawn'].dims}")
    a = pairs["a"].transpose("pair", "unit").data
    b = pairs["b"].transpose("pair", "unit").data
    drawn = str_array(pairs["drawn"].values)
    return a, b, drawn, factors


def _weighted_sums(weights: np.ndarray, x: Any) -> Any:
    """weights @ x, lazily (chunk by chunk) when x is dask-backed."""
    if isinstance(x, da.Array):
        w = da.from_array(weights, chunks=(weights.shape[0], x.chunks[0]))
        return w @ x
    return weights @ x


def factor_dimensions(pairs: xr.Dataset, total: int | None = None) -> xr.DataArray:
    r"""How many latent dimensions each factor deserves: the IIN estimate from the pairs.

    For the pairs drawn for factor F (``pairs.drawn == F``), with a and b their two members
    and k a unit,

    .. math::

        s_F = \frac{\sum_k \operatorname{mean}_{F}\big[(a_k - m_k)(b_k - m_k)\big]}
                   {\sum_k \operatorname{Var}_k},
        \qquad m_k = \tfrac12\big(\operatorname{mean}_F a_k + \operatorname{mean}_F b_k\big),

    where Var_k is the variance (ddof 0) of a_k and b_k of all pairs (every factor) pooled.
    The residual's score is 1. Then N_F = ⌊softmax(s)_F · total⌋ for every named factor and
    the residual takes the remainder (Esser, Rombach & Ommer 2020, arXiv:2004.13166).

    Everything is computed in float64, from per-unit sums of a, b, a·b and a² + b² taken
    chunk by chunk when the pairs are dask-backed (one ``compute``; the pairs are never held
    whole), after subtracting the first pair's a from every value (variances and
    covariances do not change, and large means do not cancel digits).

    Parameters
    ----------
    pairs : xarray.Dataset
        The result of ``tmx.flows.pairs``: ``a`` and ``b`` over (pair, unit), the ``drawn``
        coordinate and the ``factor`` coordinate (residual first).
    total : int, optional
        The number of dimensions to share out; default the number of units.

    Returns
    -------
    xarray.DataArray
        int64 over ``factor`` (residual first), named ``dimensions``, summing to ``total``,
        with the float64 ``score`` as a coordinate and ``attrs`` saying how it was computed
        (``function`` "flows.factor_dimensions", ``method``, ``formula``, ``total``,
        ``n_pairs``, ``pairs_per_factor``, ``tmx_version``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import flows
    >>> cube = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(8, 3, 2)),
    ...     dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["h", "h"])},
    ... )
    >>> pr = flows.pairs(cube, ("sample", "transformation"), n=10, seed=0)
    >>> dims = flows.factor_dimensions(pr)
    >>> dims["factor"].values.tolist(), int(dims.sum())
    (['residual', 'sample', 'transformation'], 2)
    """
    a, b, drawn, factors = _pairs_arrays(pairs)
    n_pairs, n_units = a.shape
    total = n_units if total is None else v.positive_int(total, "total")
    named = factors[1:]
    unknown = sorted(set(drawn) - set(named))
    if unknown:
        raise ValueError(f"pairs.drawn names factors {unknown} that are not in pairs.factor")
    onehot = np.stack([drawn == f for f in named]).astype(np.float64) if named else None
    counts = onehot.sum(axis=1) if onehot is not None else np.zeros(0)
    if np.any(counts == 0):
        empty = [f for f, c in zip(named, counts, strict=True) if c == 0]
        raise ValueError(f"pairs has no pairs drawn for factor(s) {empty}")
    if n_pairs == 0 or n_units == 0:
        raise ValueError("pairs must have at least one pair and one unit")

    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    shift = a64[0]
    a64 = a64 - shift
    b64 = b64 - shift
    ones = np.ones((1, n_pairs))
    parts = [
        _weighted_sums(ones, a64 + b64),
        _weighted_sums(ones, a64 * a64 + b64 * b64),
    ]
    if onehot is not None:  # some factors are named
        parts += [
            _weighted_sums(onehot, a64),
            _weighted_sums(onehot, b64),
            _weighted_sums(onehot, a64 * b64),
        ]
    sums = [np.asarray(p, dtype=np.float64) for p in dask.compute(*parts)]

    pooled = 2.0 * n_pairs
    pooled_mean = sums[0][0] / pooled
    variance = np.sum(np.maximum(sums[1][0] / pooled - pooled_mean**2, 0.0))
    if not np.isfinite(variance) or variance <= 0:
        raise ValueError(
            "pairs: a and b have no variance (or non-finite values); the scores are undefined"
        )
    scores = [1.0]
    if named:
        sum_a, sum_b, sum_ab = sums[2], sums[3], sums[4]
        n = counts[:, None]
        mid = 0.5 * (sum_a + sum_b) / n
        covariance = sum_ab / n - mid**2
        scores += list(np.sum(covariance, axis=1) / variance)
    score = np.asarray(scores, dtype=np.float64)
    weights = np.exp(score - score.max())
    weights /= weights.sum()
    dims = np.floor(weights * total).astype(np.int64)
    dims[0] = total - dims[1:].sum()

    attrs = provenance(
        "function",
        "flows.factor_dimensions",
        method="IIN estimate (Esser, Rombach & Ommer 2020)",
        formula=(
            "score_F = sum_k mean_F((a_k - m_k)(b_k - m_k)) / sum_k Var_k, "
            "m_k = (mean_F a_k + mean_F b_k) / 2, Var_k = variance (ddof 0) of a_k and b_k "
            "of all pairs pooled; score_residual = 1; N_F = floor(softmax(score)_F * total), "
            "residual = the remainder; float64"
        ),
        reference=_REFERENCE,
        total=int(total),
        n_pairs=int(n_pairs),
        pairs_per_factor=[int(c) for c in counts],
    )
    return xr.DataArray(
        dims,
        dims=("factor",),
        coords={"factor": np.asarray(factors), "score": ("factor", score)},
        name="dimensions",
        attrs=attrs,
    )
