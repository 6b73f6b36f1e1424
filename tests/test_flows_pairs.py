"""Pairs drawn from a cube for interpretation flows (design notes flows.md, api.md §7)."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx.flows import factor_dimensions, pairs

N, T = 12, 6
LAYERS = {"conv": 6, "dense": 4}
U = sum(LAYERS.values())
ANGLES = np.array([0.0, 90.0, 180.0, 0.0, 90.0, 180.0])  # rotation × 2 translations
DX = np.array([0, 0, 0, 3, 3, 3])
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 4])  # label 4 is alone


def _values(s0, s1, t0, t1, u0, u1):
    s, t, u = np.meshgrid(
        np.arange(s0, s1), np.arange(t0, t1), np.arange(u0, u1), indexing="ij", sparse=True
    )
    return (1000.0 * s + 10.0 * t + u + 0.25).astype(np.float32)  # row-identifying values


def _coords(n=N, t=T, labels=LABELS, angles=ANGLES, dx=DX):
    names = [name for name, size in LAYERS.items() for _ in range(size)]
    coords = {
        "sample": np.arange(100, 100 + n),  # not positions: pairs report coordinate values
        "transformation": np.arange(t),
        "unit": np.arange(U),
        "layer": ("unit", np.array(names)),
        "channel": ("unit", np.r_[np.arange(6) % 2, np.arange(4)]),
        "y": ("unit", np.r_[np.arange(6) // 2, np.full(4, -1)]),
        "x": ("unit", np.r_[np.zeros(6, int), np.full(4, -1)]),
    }
    if labels is not None:
        coords["label"] = ("sample", labels[:n])
    if angles is not None:
        coords["angle"] = ("transformation", angles[:t])
        coords["dx"] = ("transformation", dx[:t])
        names = [f"r{a:g}_x{d}" for a, d in zip(angles, dx, strict=True)]
        coords["transform"] = ("transformation", names[:t])
    return coords


def make_cube(n=N, t=T, **kw) -> xr.DataArray:
    return xr.DataArray(
        _values(0, n, 0, t, 0, U),
        dims=("sample", "transformation", "unit"),
        coords=_coords(n, t, **kw),
        name="activation",
        attrs={"model_name": "toy"},
    )


def counted_cube(reads: set) -> xr.DataArray:
    """A dask cube that records which blocks were computed."""
    lock = threading.Lock()

    def block(block_info=None):
        (s0, s1), (t0, t1), (u0, u1) = block_info[None]["array-location"]
        with lock:
            reads.add(tuple(block_info[None]["chunk-location"]))
        return _values(s0, s1, t0, t1, u0, u1)

    chunks = da.core.normalize_chunks((4, 3, 5), (N, T, U))
    data = da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.array((), np.float32))
    return xr.DataArray(data, dims=("sample", "transformation", "unit"), coords=_coords())


def _positions(pr, end):
    return pr[f"sample_{end}"].values - 100, pr[f"transformation_{end}"].values


def _expected_rows(pr, end, units=slice(None)):
    s, t = _positions(pr, end)
    return make_cube().values[s, t][:, units]


BY = ("sample", "transformation", "label", "angle")


# -- what each factor's pairs share --------------------------------------------------------------
def test_each_factor_shares_what_it_claims():
    pr = pairs(make_cube(), BY, n=400, seed=1)
    s_a, t_a = _positions(pr, "a")
    s_b, t_b = _positions(pr, "b")
    drawn = pr["drawn"].values
    sample = drawn == "sample"
    assert np.all(s_a[sample] == s_b[sample]) and np.all(t_a[sample] != t_b[sample])
    trans = drawn == "transformation"
    assert np.all(t_a[trans] == t_b[trans]) and np.all(s_a[trans] != s_b[trans])
    label = drawn == "label"
    assert np.all(LABELS[s_a[label]] == LABELS[s_b[label]])
    assert np.all(s_a[label] != s_b[label]) and np.all(t_a[label] == t_b[label])
    assert not np.any(LABELS[s_a[label]] == 4)  # a label no other sample has is never drawn
    np.testing.assert_array_equal(pr["label_a"].values, LABELS[s_a])
    np.testing.assert_array_equal(pr["label_b"].values, LABELS[s_b])
    angle = drawn == "angle"
    assert np.all(ANGLES[t_a[angle]] == ANGLES[t_b[angle]])
    assert np.all(s_a[angle] != s_b[angle])
    assert np.any(t_a[angle] != t_b[angle])  # the other parameter (dx) varies
    np.testing.assert_array_equal(pr["angle_a"].values, ANGLES[t_a])
    np.testing.assert_array_equal(
        pr["transform_b"].values, np.asarray(_coords()["transform"][1])[t_b]
    )
    # every transformation and sample is reached
    assert len(set(t_b[sample])) == T and len(set(s_a[trans])) == N


def test_counts_order_and_attrs():
    pr = pairs(make_cube(), BY, n=103)
    assert pr.sizes == {"pair": 103, "unit": U, "factor": 5}
    assert list(pr["factor"].values) == ["residual", *BY]
    counts = {f: int((pr["drawn"].values == f).sum()) for f in BY}
    assert counts == {"sample": 26, "transformation": 26, "label": 26, "angle": 25}
    assert pr.attrs["pairs_per_factor"] == [26, 26, 26, 25]
    # factors are interleaved (seeded shuffle), not in blocks
    assert len(set(pr["drawn"].values[:20])) > 1
    assert pr.attrs["by"] == list(BY) and pr.attrs["n"] == 103 and pr.attrs["rho"] == 0.975
    assert pr.attrs["mark"] == "drawn" and pr.attrs["seed"] == 0 and pr.attrs["layer"] == "all"
    assert pr.attrs["tmx_version"] == tmx.__version__
    assert pr.attrs["cube_model_name"] == "toy"
    assert pr["a"].dims == ("pair", "unit") and pr["rho"].dims == ("pair", "factor")
    for name in ("layer", "channel", "y", "x", "unit"):
        np.testing.assert_array_equal(pr[name].values, make_cube()[name].values)


def test_single_factor_string_and_defaults():
    pr = pairs(make_cube(), "label", n=5)
    assert list(pr["factor"].values) == ["residual", "label"]
    assert set(pr["drawn"].values) == {"label"}
    pr = pairs(make_cube())
    assert pr.sizes["pair"] == 10_000
    assert list(pr["factor"].values) == ["residual", "sample", "transformation"]


def test_values_are_the_cube_rows():
    cube = make_cube()
    pr = pairs(cube, BY, n=50, seed=3)
    np.testing.assert_array_equal(pr["a"].values, _expected_rows(pr, "a"))
    np.testing.assert_array_equal(pr["b"].values, _expected_rows(pr, "b"))
    i = 7
    row = cube.sel(sample=pr["sample_b"][i].item(), transformation=pr["transformation_b"][i].item())
    np.testing.assert_array_equal(pr["b"][i].values, row.values)
    assert pr["a"].dtype == np.float32


def test_seeded():
    cube = make_cube()
    one = pairs(cube, BY, n=60, seed=7)
    xr.testing.assert_identical(one, pairs(cube, BY, n=60, seed=7))
    other = pairs(cube, BY, n=60, seed=8)
    assert not np.array_equal(one["sample_a"].values, other["sample_a"].values)


# -- rho -----------------------------------------------------------------------------------------
def _shares(pr, factor):
    s_a, t_a = _positions(pr, "a")
    s_b, t_b = _positions(pr, "b")
    return {
        "sample": s_a == s_b,
        "transformation": t_a == t_b,
        "label": LABELS[s_a] == LABELS[s_b],
        "angle": ANGLES[t_a] == ANGLES[t_b],
        "dx": DX[t_a] == DX[t_b],
    }[factor]


def test_mark_drawn_sets_only_the_drawn_factor():
    pr = pairs(make_cube(), BY, n=200, rho=0.9)
    rho = pr["rho"]
    assert np.all(rho.sel(factor="residual") == 0)
    for f in BY:
        np.testing.assert_array_equal(rho.sel(factor=f).values, np.where(pr.drawn == f, 0.9, 0.0))
    assert np.all((rho > 0).sum("factor") == 1)


def test_mark_shared_sets_every_shared_factor():
    by = ("sample", "transformation", "label", "angle", "dx")
    pr = pairs(make_cube(), by, n=300, rho=0.5, mark="shared", seed=2)
    assert np.all(pr["rho"].sel(factor="residual") == 0)
    for f in by:
        expected = np.where(_shares(pr, f), 0.5, 0.0)
        np.testing.assert_array_equal(pr["rho"].sel(factor=f).values, expected)
    # same sample implies same label; a label pair shares the transformation (and its angle)
    sample = pr.drawn == "sample"
    assert np.all(pr["rho"].sel(factor="label")[sample] == 0.5)
    label = pr.drawn == "label"
    assert np.all(pr["rho"].sel(factor=["transformation", "angle", "dx"])[label] == 0.5)
    assert pr.attrs["mark"] == "shared"


def test_rho_callable():
    seen = {}

    def rho(factor, a, b):
        seen[factor] = (set(a), len(a["sample"]))
        if factor == "sample":  # identity correlation falling with the rotation between the two
            return 0.9 * np.cos(np.radians(a["angle"] - b["angle"]) / 2) ** 2
        return 0.3

    pr = pairs(make_cube(), ("sample", "label"), n=40, rho=rho)
    assert pr.attrs["rho"] == "callable"
    assert seen["sample"][0] >= {"sample", "transformation", "label", "angle", "dx", "transform"}
    assert seen["sample"][1] == 20
    sample = pr.drawn.values == "sample"
    expected = 0.9 * np.cos(np.radians(pr.angle_a - pr.angle_b) / 2) ** 2
    np.testing.assert_allclose(pr["rho"].sel(factor="sample")[sample], expected[sample])
    np.testing.assert_array_equal(pr["rho"].sel(factor="label")[~sample], 0.3)
    assert np.all(pr["rho"].sel(factor="sample")[~sample] == 0)

    with pytest.raises(ValueError, match="rho"):
        pairs(make_cube(), ("sample",), n=4, rho=lambda f, a, b: 1.0)
    with pytest.raises(ValueError, match="rho"):
        pairs(make_cube(), ("sample",), n=4, rho=lambda f, a, b: np.full(3, 0.5))


@pytest.mark.parametrize("rho", [1.0, 1.5, -0.1, np.nan, "0.5", True, None])
def test_rho_outside_unit_interval(rho):
    with pytest.raises(ValueError, match="rho"):
        pairs(make_cube(), n=4, rho=rho)


def test_rho_zero_allowed():
    assert np.all(pairs(make_cube(), n=4, rho=0.0)["rho"] == 0)


# -- laziness, dask and Zarr ---------------------------------------------------------------------
def test_dask_cube_gives_lazy_identical_pairs():
    reads: set = set()
    cube = counted_cube(reads)
    lazy = pairs(cube, BY, n=40, seed=4)
    assert not reads  # nothing computed to build the pairs
    assert isinstance(lazy["a"].data, da.Array) and isinstance(lazy["b"].data, da.Array)
    eager = pairs(make_cube(), BY, n=40, seed=4)
    for name in ("a", "b"):
        np.testing.assert_array_equal(lazy[name].values, eager[name].values)
    for name in ("sample_a", "transformation_b", "label_b", "drawn", "rho"):
        np.testing.assert_array_equal(lazy[name].values, eager[name].values)
    # the first output chunk reads only the cube blocks that hold its rows
    reads.clear()
    first = lazy["a"].data.chunks[0][0]
    assert first < 40
    np.testing.assert_array_equal(lazy["a"][:first].values, eager["a"].values[:first])
    s, t = _positions(eager.isel(pair=slice(0, first)), "a")
    blocks = {(int(si) // 4, int(ti) // 3) for si, ti in zip(s, t, strict=True)}
    assert {r[:2] for r in reads} == blocks


def test_layer_selection():
    pr = pairs(counted_cube(set()), n=20, layer="dense", seed=5)
    assert pr.sizes["unit"] == 4 and set(pr["layer"].values) == {"dense"}
    assert isinstance(pr["a"].data, da.Array)
    np.testing.assert_array_equal(pr["a"].values, _expected_rows(pr, "a", slice(6, 10)))
    np.testing.assert_array_equal(pr["unit"].values, np.arange(6, 10))
    assert pr.attrs["layer"] == "dense"
    with pytest.raises(ValueError, match=r"layer.*\['conv', 'dense'\]"):
        pairs(make_cube(), layer="fc")


def test_zarr_cube(tmp_path):
    cube = make_cube().chunk({"sample": 5, "transformation": 4, "unit": 4})
    path = tmx.save(cube, tmp_path / "cube.zarr")
    stored = tmx.open(path)
    lazy = pairs(stored, BY, n=30, layer="conv", seed=6)
    assert isinstance(lazy["a"].data, da.Array)
    eager = pairs(make_cube(), BY, n=30, layer="conv", seed=6)
    xr.testing.assert_identical(
        lazy.drop_attrs(deep=False).load(), eager.drop_attrs(deep=False).load()
    )
    np.testing.assert_array_equal(lazy["b"].values, _expected_rows(eager, "b", slice(0, 6)))


def test_factor_dimensions_of_pairs_numpy_and_dask():
    rng = np.random.default_rng(0)
    cube = make_cube().copy(data=rng.normal(size=(N, T, U)).astype(np.float32))
    eager = factor_dimensions(pairs(cube, BY, n=80))
    lazy = factor_dimensions(pairs(cube.chunk({"sample": 5, "unit": 3}), BY, n=80))
    xr.testing.assert_allclose(eager, lazy)
    np.testing.assert_array_equal(eager.values, lazy.values)
    assert int(eager.sum()) == U


# -- bad arguments -------------------------------------------------------------------------------
def test_bad_cube():
    with pytest.raises(ValueError, match="cube"):
        pairs(make_cube().values)
    with pytest.raises(ValueError, match="cube"):
        pairs(make_cube().isel(transformation=0))
    with pytest.raises(ValueError, match="cube"):
        pairs(make_cube().rename(unit="neuron"))


def test_transposed_cube_is_fine():
    pr = pairs(make_cube().transpose("unit", "sample", "transformation"), n=10)
    np.testing.assert_array_equal(pr["a"].values, _expected_rows(pr, "a"))


def test_bad_by():
    with pytest.raises(ValueError, match=r"by.*'colour'.*\['sample', 'transformation', 'label'"):
        pairs(make_cube(), ("sample", "colour"))
    for by in ((), ("sample", "sample"), ("residual",), ("layer",), (3,)):
        with pytest.raises(ValueError, match="by"):
            pairs(make_cube(), by)


def test_impossible_factors():
    with pytest.raises(ValueError, match=r"by.*'sample'.*transformation"):
        pairs(make_cube(t=1, angles=None), ("sample",))
    with pytest.raises(ValueError, match=r"by.*'transformation'.*sample"):
        pairs(make_cube(n=1, labels=None), ("transformation",))
    with pytest.raises(ValueError, match=r"by.*'label'"):
        pairs(make_cube(labels=np.arange(N)), ("label",))
    # a label made of NaNs never pairs
    with pytest.raises(ValueError, match=r"by.*'label'"):
        pairs(make_cube(labels=np.full(N, np.nan)), ("label",))


def test_unique_transformation_values_pair_like_transformation():
    cube = make_cube(angles=np.arange(6) * 60.0, dx=np.arange(6))
    pr = pairs(cube, ("angle",), n=30)
    np.testing.assert_array_equal(pr.transformation_a, pr.transformation_b)
    assert np.all(pr.sample_a != pr.sample_b)


def test_other_bad_arguments():
    cube = make_cube()
    with pytest.raises(ValueError, match="mark"):
        pairs(cube, mark="all")
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n must"):
            pairs(cube, n=n)
    with pytest.raises(ValueError, match="n must"):
        pairs(cube, BY, n=3)
    with pytest.raises(ValueError, match="seed"):
        pairs(cube, seed=-1)
    with pytest.raises(ValueError, match="layer"):
        pairs(cube.drop_vars("layer"), layer="conv")
