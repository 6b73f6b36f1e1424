"""One-way ANOVA per unit: is a unit's mean activation the same under every transformation?

For unit u, the T transformations are the groups and the N samples the observations of each
group (a balanced design, every group has N observations). With a_ij the activation of sample
i under transformation j, m_j = (1/N) Σ_i a_ij the group means and m = (1/T) Σ_j m_j the grand
mean (Fisher 1925):

    MSB = N Σ_j (m_j − m)² / (T − 1)                (between transformations, dfn = T − 1)
    MSW = Σ_j Σ_i (a_ij − m_j)² / (T (N − 1))       (within transformations,  dfd = T (N − 1))
    F   = MSB / MSW,    p = P(F(dfn, dfd) > F)      (upper tail of Fisher–Snedecor's F)

This is ``scipy.stats.f_oneway(a[:, 0, u], …, a[:, T − 1, u])``, edge cases included: when every
group is constant (MSW = 0) F = +inf, p = 0, unless all groups share one value (MSB = 0 too), then
F = p = NaN. Constancy is tested exactly (min = max per group), as scipy does. The moments are
taken around values of the data (``_common.moments``, the group means relative to the unit's
first cell, the grand mean around the first group's mean), so groups with exactly equal means
give SSB = 0 and F = 0, p = 1 exactly, whatever the dtype and the chunking (scipy leaves a
rounding residue, F ≈ 1e-30).

A small p says the transformations move the unit's mean: the unit is *not* invariant in mean.
``anova_invariance`` tests every unit at level ``alpha`` with a multiple-testing correction
(Bonferroni; Holm 1979; Benjamini & Hochberg 1995).

References
----------
R. A. Fisher, *Statistical Methods for Research Workers*, 1925.
S. Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6, 1979.
Y. Benjamini & Y. Hochberg, "Controlling the false discovery rate: a practical and powerful
approach to multiple testing", J. R. Statist. Soc. B 57, 1995.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import special, stats

from .. import _validate as v
from .._progress import dask_bar
from .._progress import resolve as resolve_progress
from .._schema import check_cube
from ._common import base_attrs, choice, moments, unit_result

__all__ = ["CORRECTIONS", "adjust_pvalues", "anova", "anova_invariance"]

CORRECTIONS = ("bonferroni", "holm", "fdr_bh", None)


# -- the F statistic ----------------------------------------------------------------------------
def _anova_block(mom: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, t: int) -> np.ndarray:
    """F and p of a block of units from the per-(transformation, unit) moments and extremes.

    ``mom``: (3, T, u) = (count, mean, M2) over samples; ``lo``/``hi``: (T, u) minimum/maximum
    over samples. Returns (2, u): F, p.
    """
    means, m2 = mom[1], mom[2]
    # deviations around the first group's mean: equal group means give SSB = 0 exactly
    dev = means - means[:1]
    dev -= dev.mean(axis=0)
    ssb = n * (dev * dev).sum(axis=0)
    ssw = m2.sum(axis=0)
    msb = ssb / (t - 1)
    msw = ssw / (t * (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = msb / msw
    groups_constant = (lo == hi).all(axis=0)
    all_same = groups_constant & (lo.min(axis=0) == hi.max(axis=0))
    f = np.where(groups_constant, np.inf, f)
    f = np.where(all_same, np.nan, f)
    p = special.fdtrc(t - 1, t * (n - 1), f)  # = scipy.stats.f.sf(f, dfn, dfd)
    return np.stack([f, p])


def anova(cube: xr.DataArray) -> xr.Dataset:
    """One-way ANOVA of every unit, transformations as groups, samples as observations.

    Parameters
    ----------
    cube : xr.DataArray
        The activation cube, dims (sample, transformation, unit), numpy- or dask-backed;
        N ≥ 2 samples and T ≥ 2 transformations.

    Returns
    -------
    xr.Dataset
        Over ``unit`` (with the cube's unit coordinates): ``f`` (the F statistic) and ``p`` (its
        upper-tail p-value), float64. attrs: ``measure`` = "anova", ``n_samples`` (N),
        ``n_transformations`` (T), ``dfn`` = T − 1, ``dfd`` = T (N − 1).

    Notes
    -----
    F = MSB / MSW with MSB = N Σ_j (m_j − m)² / (T − 1), MSW = Σ_j Σ_i (a_ij − m_j)² / (T (N − 1))
    (m_j: mean over samples under transformation j, m: mean of the m_j); p = P(F(T − 1,
    T (N − 1)) > F). Equal to ``scipy.stats.f_oneway`` per unit, including its edge cases:
    all groups constant → F = inf, p = 0; all groups constant and equal → F = p = NaN.

    One pass over the cube: the float64 moments per (transformation, unit) (Chan et al.'s
    chunked merge, see ``_common.moments``) and the per-group extremes (for the exact constancy
    test) share the cube's blocks. A lazy cube gives a lazy result (the p-values are computed
    blockwise from F).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from scipy import stats
    >>> from tmx.measures.anova import anova
    >>> a = np.random.default_rng(0).normal(size=(20, 3, 2))    # N=20, T=3, 2 units
    >>> a[:, 1, 1] += 3.0                         # transformation 1 shifts unit 1's mean
    >>> res = anova(tmx.from_array({"dense": a}))
    >>> ref = stats.f_oneway(*a[:, :, 1].T)       # the T groups of unit 1
    >>> bool(np.isclose(res.f[1], ref.statistic)), bool(np.isclose(res.p[1], ref.pvalue))
    (True, True)
    >>> res.attrs["dfn"], res.attrs["dfd"], bool(res.p[1] < 1e-6)
    (2, 57, True)
    """
    return _anova(cube, "anova")


def _anova(cube: xr.DataArray, measure: str) -> xr.Dataset:
    cube = check_cube(
        cube,
        measure=measure,
        min_samples=2,
        min_transformations=2,
        need="a one-way ANOVA needs two groups and a within-group variance",
    )
    n, t = cube.sizes["sample"], cube.sizes["transformation"]
    data = cube.data
    # the group means relative to one value of each unit (its first cell): the differences
    # between group means keep their digits when the means are large compared to the spread
    mom = moments(data, axis=0, ref=data[0:1, 0:1, :])
    lo, hi = data.min(axis=0), data.max(axis=0)
    if isinstance(data, da.Array):
        out = da.blockwise(
            _anova_block,
            "ku",
            mom.rechunk({0: -1, 1: -1}),
            "mju",
            lo.rechunk({0: -1}),
            "ju",
            hi.rechunk({0: -1}),
            "ju",
            n=n,
            t=t,
            new_axes={"k": 2},
            concatenate=True,
            dtype=np.float64,
        )
    else:
        out = _anova_block(mom, lo, hi, n, t)
    attrs = base_attrs(cube, "anova")
    attrs.update(dfn=t - 1, dfd=t * (n - 1))
    return xr.Dataset(
        {
            "f": unit_result(out[0], cube, "f", {"long_name": "F statistic"}),
            "p": unit_result(out[1], cube, "p", {"long_name": "p-value of F"}),
        },
        attrs=attrs,
    )


# -- multiple testing ---------------------------------------------------------------------------
def adjust_pvalues(p: Any, correction: str | None = "bonferroni") -> np.ndarray:
    """Multiple-testing adjusted p-values, as ``statsmodels.stats.multitest.multipletests``.

    Only the finite p-values are tested; m is their number, and the others come back NaN. With
    p_(1) ≤ … ≤ p_(m) the sorted p-values (ranks 1-indexed):

    - ``"bonferroni"``: p_adj = min(1, m p).
    - ``"holm"`` (Holm 1979, step-down): p_adj_(k) = max_{i ≤ k} min(1, (m − i + 1) p_(i)).
    - ``"fdr_bh"`` (Benjamini & Hochberg 1995, step-up):
      p_adj_(k) = min_{i ≥ k} min(1, m p_(i) / i).
    - ``None``: p_adj = p.

    Rejecting p_adj ≤ α controls the family-wise error rate at α (Bonferroni, Holm) or the false
    discovery rate at α (BH, for independent or positively dependent tests). Ties get equal
    adjusted values whatever their order.

    Examples
    --------
    >>> from tmx.measures.anova import adjust_pvalues
    >>> adjust_pvalues([0.01, 0.04, 0.03]).round(3).tolist()          # m p
    [0.03, 0.12, 0.09]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(3).tolist()  # 3p, 2p, 1p, monotone
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03, float("nan")], "fdr_bh").round(3).tolist()
    [0.03, 0.04, 0.04, nan]
    """
    correction = choice(correction, "correction", CORRECTIONS)
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    if correction is None:
        adj = q
    elif correction == "bonferroni":
        adj = np.minimum(1.0, m * q)
    else:
        order = np.argsort(q, kind="stable")
        s = q[order]
        rank = np.arange(1, m + 1)
        if correction == "holm":
            adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1) * s))
        else:  # fdr_bh
            adj_sorted = np.minimum.accumulate(np.minimum(1.0, m * s / rank)[::-1])[::-1]
        adj = np.empty(m)
        adj[order] = adj_sorted
    out[ok] = adj
    return out


def anova_invariance(
    cube: xr.DataArray,
    alpha: float = 0.01,
    correction: str | None = "bonferroni",
    *,
    progress: bool | None = None,
) -> xr.Dataset:
    """Which units does the transformation significantly affect? ANOVA per unit, corrected.

    Parameters
    ----------
    cube : xr.DataArray
        The activation cube (N ≥ 2, T ≥ 2), numpy- or dask-backed.
    alpha : float in (0, 1)
        The level: family-wise error rate (``"bonferroni"``, ``"holm"``), false discovery rate
        (``"fdr_bh"``) or per-unit level (``None``).
    correction : "bonferroni" | "holm" | "fdr_bh" | None
        The multiple-testing correction over the m tested units (see ``adjust_pvalues``).
    progress : bool, optional
        For a dask-backed cube, dask's progress bar over the one pass that computes F and p
        (see Notes); a numpy-backed cube shows nothing (nothing is waited for). Default:
        shown when run interactively, not under pytest or CI.

    Returns
    -------
    xr.Dataset
        Over ``unit``: ``f``, ``p`` (as ``anova``), ``p_adjusted`` and ``reject`` (bool:
        p_adjusted ≤ alpha, the transformation effect is significant, the unit is **not**
        invariant). Units whose p is not finite (constant units, NaN activations) are not tested:
        p_adjusted NaN, reject False. attrs: those of ``anova`` with ``measure`` =
        "anova_invariance", ``alpha``, ``correction`` ("none" for None), ``m`` (the number of
        tested units) and, for ``"bonferroni"`` and None, ``f_critical``: the F above which a unit
        rejects, the **upper**-tail quantile ``scipy.stats.f.isf(alpha / m, dfn, dfd)``
        (``alpha`` for None; NaN when m = 0). Holm and BH have no single critical value: their
        threshold depends on the unit's rank.

    Notes
    -----
    A reference implementation takes Bonferroni's critical value from the *lower* tail of F
    (``f.ppf(alpha / m)``), which is below 1, so almost every unit "rejects"; here the critical
    value is the upper tail quantile, always above the F distribution's bulk.

    Laziness: a numpy-backed cube gives a numpy-backed result; a dask-backed cube gives a
    dask-backed result (in the cube's unit chunks) whose values this function has already
    computed: ``m`` and ``f_critical`` are attrs and the corrections rank every p-value, so
    they need all of them at once. Only F and p are computed (one pass over the cube,
    ``progress=`` shows it; two floats per unit held); reading the result never runs the cube
    again. For a lazy cube that is not stored, this runs its forward passes once here; to
    share one pass with other measures, compute ``anova(cube)`` (lazy, nothing computed)
    together with them and correct with ``adjust_pvalues``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx.measures.anova import anova_invariance
    >>> a = np.random.default_rng(0).normal(size=(30, 3, 2))    # N=30, T=3, 2 units
    >>> a[:, 1, 0] += 3.0                         # transformation 1 shifts unit 0's mean
    >>> res = anova_invariance(tmx.from_array({"dense": a}), alpha=0.01)
    >>> res.reject.values.tolist(), res.attrs["m"]
    ([True, False], 2)
    >>> bool(np.allclose(res.p_adjusted, np.minimum(1, 2 * res.p)))   # Bonferroni, m = 2
    True
    >>> bool((res.f > res.attrs["f_critical"]).equals(res.reject))
    True
    """
    alpha = v.fraction(alpha, "alpha")
    correction = choice(correction, "correction", CORRECTIONS)
    show = resolve_progress(progress)
    result = _anova(cube, "anova_invariance")
    f, p = result["f"].data, result["p"].data
    chunks = p.chunks if isinstance(p, da.Array) else None
    if chunks is not None:
        # m and f_critical (attrs) and the corrections need every p-value: F and p (two values
        # per unit) are computed here, in one pass over the cube
        with dask_bar(show):
            f, p = dask.compute(f, p)
    p = np.asarray(p)
    m = int(np.isfinite(p).sum())
    p_adj = adjust_pvalues(p, correction)
    reject = np.isfinite(p_adj) & (p_adj <= alpha)
    if chunks is not None:  # dask-backed, as the cube: the computed values in the cube's chunks
        f, p, p_adj, reject = (da.from_array(x, chunks=chunks) for x in (f, p, p_adj, reject))
    dfn, dfd = result.attrs["dfn"], result.attrs["dfd"]
    attrs = base_attrs(cube, "anova_invariance", alpha=alpha, correction=correction)
    attrs.update(dfn=dfn, dfd=dfd, m=m)
    if correction in ("bonferroni", None):
        if m == 0:  # nothing tested (e.g. a constant model): no critical value
            attrs["f_critical"] = float("nan")
        else:
            level = alpha / m if correction == "bonferroni" else alpha
            attrs["f_critical"] = float(stats.f.isf(level, dfn, dfd))
    ref = result["f"]
    return xr.Dataset(
        {
            "f": unit_result(f, ref, "f", {"long_name": "F statistic"}),
            "p": unit_result(p, ref, "p", {"long_name": "p-value of F"}),
            "p_adjusted": unit_result(p_adj, ref, "p_adjusted", {"long_name": "adjusted p-value"}),
            "reject": unit_result(
                reject,
                ref,
                "reject",
                {"long_name": "transformation effect significant (not invariant)"},
            ),
        },
        attrs=attrs,
    )
