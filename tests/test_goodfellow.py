"""tmx.measures.goodfellow: Goodfellow et al.'s (2009) firing-rate invariance score."""

import math

import dask.array as da
import numpy as np
import pytest
from scipy import stats

from tmx.measures.goodfellow import goodfellow

from .measures_util import flat_cube

LABELS = ["rotate", "shift", "identity", "scale"]


make_cube = flat_cube


def random_array(seed=0, n=40, t=4, u=6):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1, u)) * 2
    arr = base * rng.uniform(0, 1, size=(1, t, u)) + rng.normal(size=(n, t, u))
    return arr.astype(np.float32)


# -- an explicit example --------------------------------------------------------------------------
def test_worked_example_percentile():
    # identity: 1 2 3 4 5; the other transformation: 5 5 5 1 1
    arr = np.array([[1, 5], [2, 5], [3, 5], [4, 1], [5, 1]], np.float32)[:, :, None]
    cube = make_cube(arr, ["identity", "other"])
    # the 0.8 quantile of 1..5: h = 4 · 0.8 = 3.2 → 4 + 0.2 (5 − 4) = 4.2
    res = goodfellow(cube, threshold="percentile", rate=0.2)
    assert res["threshold"].item() == pytest.approx(4.2, rel=1e-12)
    assert res["global"].item() == 1 / 5  # 5 fires
    assert res["local"].item() == 4 / 10  # 5 of the identity, 5 5 5 of the other
    assert res["score"].item() == pytest.approx(2.0, rel=1e-15)
    # top-1 sample (value 5): cells 5, 1 → one of two fire
    top1 = goodfellow(cube, threshold="percentile", rate=0.2, local="top", top=1)
    assert (top1["local"].item(), top1["n_top"].item()) == (0.5, 1)
    assert top1["score"].item() == pytest.approx(2.5, rel=1e-15)
    # top-2 samples (values 4, 5): cells 4 5 1 1 → one of four fires
    top2 = goodfellow(cube, threshold="percentile", rate=0.2, local="top", top=2)
    assert top2["local"].item() == 0.25
    assert top2["score"].item() == pytest.approx(1.25, rel=1e-15)
    assert top2.attrs["top"] == 2 and top2.attrs["reference"] == [0]


# -- the definitions, recomputed by hand ----------------------------------------------------------
def by_hand(arr, ref, threshold, rate, local, z, sign):
    """t, G, L, score, n_top per unit, straight from the definitions."""
    n, t, u = arr.shape
    a = sign * arr.astype(np.float64)
    out = {k: np.zeros(u) for k in ("threshold", "global", "local", "score", "n_top")}
    for k in range(u):
        cells = a[:, ref, k].ravel()
        if threshold == "normal":
            thr = cells.mean() + cells.std(ddof=0) * stats.norm.ppf(1 - rate)
        else:
            thr = np.quantile(cells, 1 - rate)
        g = np.sum(cells > thr) / cells.size
        if local == "all":
            loc = np.sum(a[:, :, k] > thr) / (n * t)
            used = n
        else:
            key = a[:, ref, k].mean(axis=1)
            zth = sorted(key, reverse=True)[z - 1]
            chosen = [i for i in range(n) if key[i] >= zth]
            loc = sum(np.sum(a[i, :, k] > thr) for i in chosen) / (len(chosen) * t)
            used = len(chosen)
        score = loc / g if g > 0 else (math.inf if loc > 0 else math.nan)
        for name, v in zip(out, (thr, g, loc, score, used), strict=True):
            out[name][k] = v
    return out


@pytest.mark.parametrize("threshold", ["normal", "percentile"])
@pytest.mark.parametrize("local", ["all", "top"])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("reference", [None, [0, 2]])
def test_matches_hand_computation(threshold, local, sign, reference):
    arr = random_array(seed=1, n=30, t=4, u=5)
    arr[:, :, 4] = np.round(arr[:, :, 4])  # ties: in the quantile and the top-Z ranking
    cube = make_cube(arr, LABELS)
    rate, z = 0.15, 4 if local == "top" else None
    res = goodfellow(
        cube, reference=reference, threshold=threshold, rate=rate, local=local, top=z, sign=sign
    )
    ref = [2] if reference is None else reference
    exp = by_hand(arr, ref, threshold, rate, local, z, sign)
    np.testing.assert_allclose(res["threshold"].values, exp["threshold"], rtol=1e-12)
    if threshold == "percentile":  # numpy.quantile's own arithmetic, to the bit
        np.testing.assert_array_equal(res["threshold"].values, exp["threshold"])
    for name in ("global", "local", "score"):
        np.testing.assert_allclose(res[name].values, exp[name], rtol=1e-14, err_msg=name)
    assert (res["global"].values > 0).all()
    if local == "top":
        np.testing.assert_array_equal(res["n_top"].values, exp["n_top"])
    else:
        assert "n_top" not in res
    assert res.attrs["reference"] == ref and res.attrs["sign"] == sign
    assert res.attrs["measure"] == "goodfellow" and res.attrs["threshold"] == threshold


def test_top_includes_ties_and_defaults_to_one_percent():
    n = 250
    arr = np.zeros((n, 2, 2), np.float32)
    arr[:, :, 0] = np.arange(n)[:, None]
    arr[:, :, 1] = np.arange(n)[:, None]
    arr[-5:, 0, 1] = 1000.0  # five samples tie for the top
    res = goodfellow(make_cube(arr, ["identity", "other"]), local="top", rate=0.1)
    assert res.attrs["top"] == 3  # ⌈0.01 · 250⌉
    np.testing.assert_array_equal(res["n_top"].values, [3, 5])
    small = goodfellow(make_cube(arr[:50]), local="top", rate=0.1)
    assert small.attrs["top"] == 1


# -- properties -----------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", ["normal", "percentile"])
@pytest.mark.parametrize("chunks", [None, {"sample": 17, "transformation": 2}])
def test_unit_depending_only_on_the_sample_scores_exactly_one(threshold, chunks):
    rng = np.random.default_rng(2)
    arr = np.repeat(rng.normal(size=(100, 1, 3)), 5, axis=1).astype(np.float32)
    res = goodfellow(make_cube(arr, ["a", "identity", "b", "c", "d"], chunks), threshold=threshold)
    res = res.compute()
    assert (res["global"].values > 0).all()
    np.testing.assert_array_equal(res["score"].values, 1.0)
    np.testing.assert_array_equal(res["local"].values, res["global"].values)


def test_zero_global_rate():
    arr = np.zeros((10, 3, 2), np.float32)
    arr[:, 1:, 0] = 1.0  # constant on the reference (t = 0, G = 0), fires elsewhere: inf
    res = goodfellow(make_cube(arr, ["identity", "b", "c"]))  # unit 1 never fires: NaN
    np.testing.assert_array_equal(res["threshold"].values, [0.0, 0.0])
    np.testing.assert_array_equal(res["global"].values, [0.0, 0.0])
    np.testing.assert_array_equal(res["local"].values, [2 / 3, 0.0])
    assert res["score"].values[0] == np.inf and np.isnan(res["score"].values[1])


def test_reference_detection():
    arr = random_array(seed=3, t=4)
    with_identity = goodfellow(make_cube(arr, LABELS))
    assert with_identity.attrs["reference"] == [2]
    assert with_identity.identical(goodfellow(make_cube(arr, LABELS), reference=2))
    assert with_identity.identical(goodfellow(make_cube(arr, LABELS), reference=[-2]))
    two = goodfellow(make_cube(arr, ["identity", "a", "identity", "b"]))
    assert two.attrs["reference"] == [0, 2]
    np.testing.assert_array_equal(
        two["threshold"].values, goodfellow(make_cube(arr), reference=[2, 0])["threshold"].values
    )
    for cube in (make_cube(arr), make_cube(arr, ["Identity", "a", "b", "c"])):
        res = goodfellow(cube)
        assert res.attrs["reference"] == [0, 1, 2, 3]
        np.testing.assert_array_equal(
            res["threshold"].values, goodfellow(cube, reference="all")["threshold"].values
        )
        np.testing.assert_array_equal(res["score"].values, 1.0)  # reference = all cells


OPTIONS = [
    {},
    {"threshold": "percentile", "rate": 0.1},
    {"local": "top", "top": 3, "sign": -1},
    {"local": "top", "threshold": "percentile", "rate": 0.05, "reference": [1, 3]},
    {"threshold": "percentile", "rate": 0.3, "reference": "all", "sign": -1},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_numpy_dask_parity_across_chunkings(options):
    arr = random_array(seed=4, n=45, t=4, u=7)
    arr[:, :, 6] = np.round(arr[:, :, 6])
    expected = goodfellow(make_cube(arr, LABELS), **options)
    chunkings = [{"sample": 8}, {"sample": 13, "transformation": 3, "unit": 4}, {"unit": 1}]
    for chunks in chunkings:
        lazy = goodfellow(make_cube(arr, LABELS, chunks), **options)
        assert isinstance(lazy["score"].data, da.Array)
        assert isinstance(lazy["threshold"].data, np.ndarray)  # computed in the first pass
        lazy = lazy.compute()
        assert lazy.attrs == expected.attrs
        if options.get("threshold") == "percentile":
            np.testing.assert_array_equal(lazy["threshold"].values, expected["threshold"].values)
        else:
            np.testing.assert_allclose(lazy["threshold"].values, expected["threshold"].values)
        for name in expected.data_vars:
            if name != "threshold":
                np.testing.assert_array_equal(lazy[name].values, expected[name].values, name)
        assert list(lazy["channel"].values) == list(range(7))


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"threshold": "gauss"}, "threshold"),
        ({"threshold": None}, "threshold"),
        ({"local": "some"}, "local"),
        ({"rate": 0}, "rate"),
        ({"rate": 1}, "rate"),
        ({"rate": 1.5}, "rate"),
        ({"rate": -0.01}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": "0.01"}, "rate"),
        ({"sign": 2}, "sign"),
        ({"sign": True}, "sign"),
        ({"top": 3}, "local='top'"),
        ({"local": "top", "top": 0}, "top"),
        ({"local": "top", "top": 41}, "top"),
        ({"local": "top", "top": 2.0}, "top"),
        ({"reference": 4}, "out of range"),
        ({"reference": [-5]}, "out of range"),
        ({"reference": [1, 1]}, "repeat"),
        ({"reference": [1, -3]}, "repeat"),
        ({"reference": []}, "non-empty"),
        ({"reference": "identity"}, "reference"),
        ({"reference": True}, "reference"),
        ({"reference": 1.0}, "reference"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        goodfellow(make_cube(random_array(n=40), LABELS), **options)


def test_bad_cube():
    with pytest.raises(ValueError, match=r"xr\.DataArray"):
        goodfellow(np.zeros((3, 2, 1)))
