"""tmx.measures.anova: one-way ANOVA per unit (= scipy.stats.f_oneway) and its corrected test."""

import math

import dask.array as da
import numpy as np
import pytest
from scipy import stats

from tmx.measures.anova import adjust_pvalues, anova, anova_invariance

from .measures_util import flat_cube

CHUNKINGS = [
    None,
    {"sample": 5},
    {"sample": 4, "transformation": 2, "unit": 3},
    {"sample": 1, "unit": 1},
    {"transformation": 1},
]


def make_cube(arr, transforms=None, chunks=None):
    u = arr.shape[2]
    return flat_cube(arr, transforms, chunks, ["conv"] * (u // 2) + ["dense"] * (u - u // 2))


def random_cube_array(seed=0, n=17, t=6, u=9):
    """Noise plus, for some units, a transformation effect of varying strength."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(size=(n, t, u)) * rng.uniform(0.5, 3, size=u) + rng.normal(size=u) * 10
    effect = rng.normal(size=(t, u)) * np.linspace(0, 2, u)
    return (arr + effect).astype(np.float32)


def scipy_anova(arr):
    a = arr.astype(np.float64)
    res = [stats.f_oneway(*(a[:, j, u] for j in range(a.shape[1]))) for u in range(a.shape[2])]
    return np.array([r.statistic for r in res]), np.array([r.pvalue for r in res])


# -- anova ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_anova_equals_scipy_f_oneway(chunks):
    arr = random_cube_array()
    result = anova(make_cube(arr, chunks=chunks))
    assert isinstance(result["f"].data, da.Array) == (chunks is not None)
    result = result.compute()
    f, p = scipy_anova(arr)
    assert result["f"].dtype == np.float64 and result["p"].dtype == np.float64
    np.testing.assert_allclose(result["f"].values, f, rtol=1e-10)
    np.testing.assert_allclose(result["p"].values, p, rtol=1e-10)
    assert p.max() > 0.3 and p.min() < 1e-6  # a range of effects, from none to strong


def test_anova_attrs_and_coords():
    arr = random_cube_array(n=11, t=4, u=5)
    result = anova(make_cube(arr))
    assert result.attrs["measure"] == "anova"
    assert (result.attrs["dfn"], result.attrs["dfd"]) == (3, 4 * 10)
    assert (result.attrs["n_samples"], result.attrs["n_transformations"]) == (11, 4)
    assert list(result["layer"].values) == ["conv", "conv", "dense", "dense", "dense"]
    assert result["f"].attrs["long_name"] == "F statistic"


@pytest.mark.parametrize("chunks", [None, {"sample": 3, "transformation": 2}])
def test_anova_edge_cases_like_scipy(chunks):
    rng = np.random.default_rng(1)
    n, t = 9, 4
    arr = rng.normal(size=(n, t, 4))
    arr[:, :, 0] = 0.1  # constant unit: F = p = NaN
    arr[:, :, 1] = np.array([0.1, 0.2, 0.3, 0.1])[None, :]  # transformation only: F = inf, p = 0
    arr[:, :, 2] = 0.7  # constant but one group differs in one place: finite F
    arr[0, 0, 2] = 0.8
    arr = arr.astype(np.float64)  # 0.1 is not exact in binary: constancy is tested exactly
    result = anova(make_cube(arr, chunks=chunks)).compute()
    f, p = scipy_anova(arr)
    assert np.isnan(result["f"].values[0]) and np.isnan(result["p"].values[0])
    assert result["f"].values[1] == np.inf and result["p"].values[1] == 0.0
    assert np.isfinite(result["f"].values[2:]).all()
    np.testing.assert_allclose(result["f"].values, f, rtol=1e-10)
    np.testing.assert_allclose(result["p"].values, p, rtol=1e-10)


def test_anova_needs_two_samples_and_two_transformations():
    with pytest.raises(ValueError, match="N = 1"):
        anova(make_cube(np.ones((1, 3, 2), np.float32)))
    with pytest.raises(ValueError, match="T = 1"):
        anova(make_cube(np.ones((5, 1, 2), np.float32)))
    with pytest.raises(ValueError, match=r"xr\.DataArray"):
        anova(np.ones((5, 3, 2)))


# -- corrections ----------------------------------------------------------------------------------
def holm_loop(p):
    """Holm's step-down adjusted p-values, written out."""
    out = [math.nan] * len(p)
    tested = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    m = len(tested)
    running = 0.0
    for k, (v, i) in enumerate(tested, start=1):
        running = max(running, min(1.0, (m - k + 1) * v))
        out[i] = running
    return np.array(out)


def bh_loop(p):
    """Benjamini–Hochberg's step-up adjusted p-values, written out."""
    out = [math.nan] * len(p)
    tested = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    m = len(tested)
    running = 1.0
    for k in range(m, 0, -1):
        v, i = tested[k - 1]
        running = min(running, min(1.0, m * v / k))
        out[i] = running
    return np.array(out)


def random_pvalues(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(size=10) * 1e-4])
    p[[3, 7, 11]] = p[5]  # ties
    p[[1, 20]] = np.nan  # untested
    p[30] = 0.0
    return rng.permutation(p)


@pytest.mark.parametrize("seed", range(3))
def test_adjust_pvalues_against_loops(seed):
    p = random_pvalues(seed)
    m = np.isfinite(p).sum()
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), holm_loop(p), rtol=1e-14)
    np.testing.assert_allclose(adjust_pvalues(p, "fdr_bh"), bh_loop(p), rtol=1e-14)
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), np.minimum(1, m * p), rtol=1e-14)
    np.testing.assert_array_equal(adjust_pvalues(p, None), p)
    # the corrections order: Bonferroni ≥ Holm ≥ BH ≥ raw
    ok = np.isfinite(p)
    b, h, f = (adjust_pvalues(p, c)[ok] for c in ("bonferroni", "holm", "fdr_bh"))
    tol = 1 - 1e-14  # m p / m need not round back to p
    assert (b >= h).all() and (h >= f * tol).all() and (f >= p[ok] * tol).all()
    assert (b <= 1).all()


def test_adjust_pvalues_all_untested():
    np.testing.assert_array_equal(adjust_pvalues([np.nan, np.nan], "holm"), [np.nan, np.nan])


def half_invariant_array(seed=2, n=30, t=8, u=40):
    """Units 0..u/2 − 1 are noise only; the others shift strongly with the transformation."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(size=(n, t, u))
    arr[:, :, u // 2 :] += 3 * rng.normal(size=(t, u - u // 2))
    return arr.astype(np.float32)


@pytest.mark.parametrize("chunks", [None, {"sample": 7, "unit": 16}])
def test_bonferroni_rejects_the_variant_half_with_an_upper_tail_critical_value(chunks):
    arr = half_invariant_array()
    u = arr.shape[2]
    alpha = 0.01
    result = anova_invariance(make_cube(arr, chunks=chunks), alpha=alpha)
    f = result["f"].values
    dfn, dfd, m = result.attrs["dfn"], result.attrs["dfd"], result.attrs["m"]
    assert m == u
    critical = stats.f.isf(alpha / m, dfn, dfd)
    assert result.attrs["f_critical"] == pytest.approx(critical, rel=1e-12)
    assert result.attrs["f_critical"] > 1
    np.testing.assert_array_equal(result["reject"].values, f > critical)
    np.testing.assert_array_equal(result["reject"].values, np.arange(u) >= u // 2)
    np.testing.assert_allclose(result["p_adjusted"].values, np.minimum(1, m * result["p"].values))
    assert result["reject"].dtype == bool
    # the lower-tail quantile (the reference library's bug) would reject every unit
    assert (f > stats.f.ppf(alpha / m, dfn, dfd)).all()
    assert result.attrs["correction"] == "bonferroni" and result.attrs["alpha"] == alpha


@pytest.mark.parametrize("correction", ["holm", "fdr_bh", None])
def test_holm_bh_none_on_cube_p_values(correction):
    arr = random_cube_array(seed=3, n=12, t=5, u=30)
    arr[:, :, 4] = 2.0  # constant: untested
    alpha = 0.05
    result = anova_invariance(make_cube(arr, chunks={"sample": 5}), alpha, correction)
    p = result["p"].values
    expected = {"holm": holm_loop, "fdr_bh": bh_loop, None: lambda q: q}[correction](p)
    np.testing.assert_allclose(result["p_adjusted"].values, expected, rtol=1e-14)
    assert np.isnan(result["p_adjusted"].values[4]) and not result["reject"].values[4]
    assert result.attrs["m"] == 29
    reject = np.where(np.isfinite(expected), expected, np.inf) <= alpha
    np.testing.assert_array_equal(result["reject"].values, reject)
    assert 0 < reject.sum() < 29
    assert ("f_critical" in result.attrs) == (correction is None)
    if correction is None:
        assert result.attrs["correction"] == "None"
        assert result.attrs["f_critical"] == pytest.approx(
            stats.f.isf(alpha, result.attrs["dfn"], result.attrs["dfd"])
        )


def test_untested_units_and_m_under_bonferroni():
    arr = half_invariant_array(u=10)
    arr[:, :, 0] = 0.0  # NaN p: untested
    arr[:, :, 9] = np.arange(8)[None, :]  # inf F, p = 0: tested, rejects
    result = anova_invariance(make_cube(arr))
    assert result.attrs["m"] == 9
    assert result.attrs["f_critical"] == pytest.approx(stats.f.isf(0.01 / 9, 7, 8 * 29))
    assert np.isnan(result["p_adjusted"].values[0]) and not result["reject"].values[0]
    assert result["reject"].values[9] and result["p_adjusted"].values[9] == 0.0


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, True, "0.05", None, np.nan])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        anova_invariance(make_cube(half_invariant_array(u=4)), alpha=alpha)


@pytest.mark.parametrize("correction", ["bh", "BONFERRONI", "none", True, 0])
def test_bad_correction(correction):
    with pytest.raises(ValueError, match="correction"):
        anova_invariance(make_cube(half_invariant_array(u=4)), correction=correction)
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues([0.1, 0.2], correction)


@pytest.mark.parametrize("correction", ["bonferroni", None])
def test_nothing_tested_gives_no_critical_value(correction):
    """A constant model: every p is NaN, m = 0, nothing rejects, f_critical is NaN (no error)."""
    arr = np.full((6, 5, 4), 0.1) + np.arange(4)  # float64: the means of 0.1s round
    result = anova_invariance(make_cube(arr, chunks={"sample": (4, 2)}), correction=correction)
    assert result.attrs["m"] == 0 and math.isnan(result.attrs["f_critical"])
    assert np.isnan(result["p_adjusted"].values).all() and not result["reject"].values.any()


@pytest.mark.parametrize("chunks", [None, {"sample": (3, 5, 3), "transformation": (2, 5)}])
def test_equal_group_means_give_f_zero_like_scipy(chunks):
    """Every group holds the same samples (a unit that depends only on the sample): the group
    means are equal, F = 0 and p = 1 exactly; scipy agrees up to its rounding residue (its F
    can even come out slightly negative, with a NaN p)."""
    rng = np.random.default_rng(5)
    offsets = np.array([0, 0.1, 1, 123.4, 1e3 / 3, 1e4])
    arr = np.broadcast_to(rng.normal(size=(11, 1, 6)) + offsets, (11, 7, 6))
    result = anova(make_cube(np.ascontiguousarray(arr), chunks=chunks)).compute()
    assert (result["f"].values == 0).all() and (result["p"].values == 1).all()
    f, p = scipy_anova(arr)
    np.testing.assert_allclose(result["f"].values, f, atol=1e-20)
    assert np.isfinite(p).any()
    np.testing.assert_allclose(result["p"].values[np.isfinite(p)], p[np.isfinite(p)], rtol=1e-12)
