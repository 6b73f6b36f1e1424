"""Lazy in, lazy out for by_channel and anova_invariance (issue 19, item 2); bootstrap computes
and says so; progress= on the measures that stream the cube themselves (bootstrap's own bar is
tested in test_bootstrap.py)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import stats

import tmx
from tmx.measures.anova import adjust_pvalues

N, T = 11, 4


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = rng.normal(size=(N, T, 2, 3, 3))
    conv[:, 2, :, :, 0] += 2.0  # transformation 2 moves channel 0 of conv
    conv[:, :, 0, 1, 2] = 0.5  # a constant unit: NV = 0/0 → NaN, ANOVA p = NaN
    dense = rng.normal(size=(N, T, 4))
    dense[:, 1, 3] += 3.0  # transformation 1 moves dense unit 3
    return {"conv": conv, "dense": dense}


def _cube(chunks: tuple[int, ...] | None = None, seed: int = 0) -> xr.DataArray:
    """A tiny cube (conv: 2 × 3 positions × 3 channels, dense: 4 units), numpy or chunked
    along samples as ``chunks`` (uneven), built with the public ``tmx.from_array``."""
    arrays = _arrays(seed)
    if chunks is not None:
        arrays = {k: da.from_array(v, chunks=(chunks, -1, *v.shape[2:])) for k, v in arrays.items()}
    return tmx.from_array(arrays)


class _Reads:
    """A dask cube whose blocks count how often they are computed."""

    def __init__(self, chunks: tuple[int, ...]) -> None:
        self.count = 0
        self.blocks = len(chunks)
        arrays = _arrays()
        flat = np.concatenate([a.reshape(N, T, -1) for a in arrays.values()], axis=2)

        def read(block: np.ndarray) -> np.ndarray:
            self.count += 1
            return block

        meta = np.empty((0, 0, 0), flat.dtype)  # no call of read to infer it
        lazy = da.from_array(flat, chunks=(chunks, -1, -1)).map_blocks(read, meta=meta)
        template = tmx.from_array(arrays)
        self.cube = template.copy(data=lazy)


# -- by_channel: lazy in, lazy out ---------------------------------------------------------------
def _by_channel_reference(values: np.ndarray, cube: xr.DataArray, reduce: str) -> np.ndarray:
    """The per-(layer, channel) reduction by plain loops over the units (finite values only)."""
    layer, channel = cube["layer"].values, cube["channel"].values
    names = list(dict.fromkeys(layer.tolist()))
    width = int(channel.max()) + 1
    out = np.full((*values.shape[:-1], len(names), width), np.nan)
    fn = {"mean": np.mean, "max": np.max, "min": np.min}[reduce]
    for i, name in enumerate(names):
        for c in range(width):
            sel = (layer == name) & (channel == c)
            if not sel.any():
                continue
            part = values[..., sel]
            for idx in np.ndindex(values.shape[:-1]):
                finite = part[idx][np.isfinite(part[idx])]
                out[(*idx, i, c)] = fn(finite) if finite.size else np.nan
    return out


@pytest.mark.parametrize("reduce", ["mean", "max", "min"])
def test_by_channel_is_lazy_for_a_lazy_result_and_equals_numpy(reduce: str) -> None:
    lazy_nv = tmx.normalized_variance(_cube(chunks=(3, 5, 3)), zero_div="nan")
    # uneven chunks along unit too, and a leading dim (as bootstrap replicates have)
    lazy_nv = xr.concat([lazy_nv, 2 * lazy_nv], dim="replicate")
    lazy_nv = lazy_nv.copy(data=lazy_nv.data.rechunk({0: 1, 1: (7, 4, 11)}))
    eager_nv = lazy_nv.compute()
    with dask.config.set(scheduler=_no_compute):
        lazy = tmx.by_channel(lazy_nv, reduce=reduce)
    assert isinstance(lazy.data, da.Array)
    assert isinstance(lazy["excluded"].data, da.Array)
    eager = tmx.by_channel(eager_nv, reduce=reduce)
    assert isinstance(eager.data, np.ndarray)
    xr.testing.assert_identical(lazy.compute(), eager)
    expected = _by_channel_reference(eager_nv.values, eager_nv, reduce)
    np.testing.assert_allclose(eager.values, expected, rtol=1e-12)
    # the constant unit (conv, channel 2) is left out and counted; dense has no channel 3 padding
    assert eager["excluded"].sel(layer="conv", channel=2).values.tolist() == [1, 1]
    assert eager["units"].sel(layer="conv").values.tolist() == [6, 6, 6, 0]
    assert np.isnan(eager.sel(layer="conv", channel=3)).all()


def _no_compute(*args, **kwargs):
    raise AssertionError("computed inside a function that should only build a graph")


# -- anova_invariance: dask-backed, one pass --------------------------------------------------
@pytest.mark.parametrize("correction", ["bonferroni", "holm", "fdr_bh", None])
def test_anova_invariance_is_dask_backed_and_equals_numpy(correction: str | None) -> None:
    eager = tmx.anova_invariance(_cube(), alpha=0.05, correction=correction)
    lazy = tmx.anova_invariance(_cube(chunks=(4, 2, 5)), alpha=0.05, correction=correction)
    for name in ("f", "p", "p_adjusted", "reject"):
        assert isinstance(lazy[name].data, da.Array), name
        assert isinstance(eager[name].data, np.ndarray), name
    assert lazy.attrs == eager.attrs
    computed = lazy.compute()
    xr.testing.assert_allclose(computed, eager, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(computed["reject"].values, eager["reject"].values)
    # against scipy and the corrections applied to scipy's p-values
    flat = np.concatenate([a.reshape(N, T, -1) for a in _arrays().values()], axis=2)
    ref = [stats.f_oneway(*flat[:, :, u].T) for u in range(flat.shape[2])]
    finite = np.isfinite(eager["p"].values)
    assert eager.attrs["m"] == int(finite.sum()) == flat.shape[2] - 1
    p_ref = np.array([r.pvalue for r in ref])
    np.testing.assert_allclose(computed["p"].values[finite], p_ref[finite], rtol=1e-10)
    np.testing.assert_allclose(
        computed["p_adjusted"].values, adjust_pvalues(p_ref, correction), rtol=1e-10
    )
    assert computed["reject"].sel(unit=computed.unit[-1]).item()  # dense unit 3


def test_anova_invariance_reads_the_cube_once_and_its_result_never_again() -> None:
    reads = _Reads(chunks=(5, 2, 4))
    result = tmx.anova_invariance(reads.cube)
    assert reads.count == reads.blocks  # F and p: one pass, each block once
    assert isinstance(result["p_adjusted"].data, da.Array)
    result.compute()
    assert reads.count == reads.blocks  # the result holds the computed values: no re-read


def test_anova_stays_a_graph() -> None:
    reads = _Reads(chunks=(6, 5))
    result = tmx.anova(reads.cube)
    assert reads.count == 0 and isinstance(result["f"].data, da.Array)


# -- bootstrap: computed (its Notes say why), the same numbers for every chunking ---------------
@pytest.mark.parametrize("method", ["jackknife", "bc"])
def test_bootstrap_computes_a_lazy_cube_with_the_numbers_of_the_numpy_cube(method: str) -> None:
    kwargs = {"n": 20, "method": method, "reduce": "mean"}
    eager = tmx.bootstrap(tmx.normalized_variance, _cube(), **kwargs)
    for chunks in ((3, 5, 3), (11,)):
        lazy = tmx.bootstrap(tmx.normalized_variance, _cube(chunks=chunks), **kwargs)
        assert all(isinstance(v.data, np.ndarray) for v in lazy.data_vars.values())
        if method == "bc":  # the replicates are the same bits for every chunking
            xr.testing.assert_identical(lazy, eager)
        else:  # the jackknife's dask moments: equal to rounding
            xr.testing.assert_allclose(lazy, eager, rtol=1e-12, atol=0)
    assert "Notes" in tmx.bootstrap.__doc__ and "progress=" in tmx.bootstrap.__doc__


# -- progress= ---------------------------------------------------------------------------------
def _calls():
    cube, lazy = _cube(), _cube(chunks=(4, 4, 3))
    return [
        ("anova_invariance", lambda p: tmx.anova_invariance(lazy, progress=p), "100% Completed"),
        ("convergence", lambda p: tmx.convergence(
            tmx.normalized_variance, cube, sizes=(5, 8, 11), progress=p), "3/3"),
        ("cka", lambda p: tmx.cka(lazy, method="features", progress=p), "3/3"),
        ("cka gram", lambda p: tmx.cka(lazy, method="gram", progress=p), "6/6"),
        ("cka minibatch", lambda p: tmx.cka(
            lazy, estimator="minibatch", batch_size=4, progress=p), "1/1"),
        ("cka_invariance", lambda p: tmx.cka_invariance(lazy, progress=p), "6/6"),
        ("equivariance_map", lambda p: tmx.equivariance_map(
            lazy, layer="dense", progress=p), "3/3"),
        ("equivalence", lambda p: tmx.equivalence(
            lazy, layer_a="conv", layer_b="dense", progress=p), "3/3"),
    ]  # fmt: skip


def _computed(result: xr.DataArray | xr.Dataset) -> xr.Dataset:
    ds = result.to_dataset(name="result") if isinstance(result, xr.DataArray) else result
    return ds.compute()


@pytest.mark.parametrize("index", range(8))
def test_progress_true_shows_a_bar_false_and_none_nothing(index: int, capsys) -> None:
    name, call, shown = _calls()[index]
    first = call(True)
    captured = capsys.readouterr()
    assert shown in captured.out + captured.err, (name, captured.out + captured.err)
    second = call(False)
    assert capsys.readouterr().out == ""
    call(None)  # None: quiet under pytest (not interactive)
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""
    xr.testing.assert_identical(_computed(first), _computed(second))  # a bar changes nothing
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        call("yes")


@pytest.mark.parametrize(
    "call",
    [
        lambda c: tmx.cka(c),
        lambda c: tmx.cka_invariance(c, estimator="unbiased"),
        lambda c: tmx.equivariance_map(c, layer="conv", kind="conv1x1"),
        lambda c: tmx.equivalence(c, layer_a="dense", layer_b="conv"),
    ],
)
def test_streamed_results_are_computed_and_equal_numpy(call) -> None:
    eager = call(_cube())
    lazy = call(_cube(chunks=(2, 6, 3)))
    values = lazy.data_vars.values() if isinstance(lazy, xr.Dataset) else [lazy]
    assert all(isinstance(v.data, np.ndarray) for v in values)
    xr.testing.assert_allclose(lazy, eager, rtol=1e-9, atol=1e-12)
