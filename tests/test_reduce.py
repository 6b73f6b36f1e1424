"""Per-layer dimension reduction against direct scikit-learn, UMAP and PaCMAP computations."""

from __future__ import annotations

import logging
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback
from sklearn.decomposition import PCA, IncrementalPCA
from sklearn.manifold import TSNE

from tmx import __version__
from tmx.introspect.reduce import reduce

LAYERS = np.array(["a"] * 4 + ["b"] * 6)


def _values(n: int, seed: int) -> np.ndarray:
    """(n, 10) responses: varied scales, a dead (constant) unit in each layer."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 10)) * np.linspace(0.5, 3.0, 10)
    values[:, 1] = 0.0
    values[:, 7] = 2.5
    return values


def _responses(
    values: np.ndarray, chunks: tuple[int, ...] | None = None, layers: np.ndarray = LAYERS
) -> xr.DataArray:
    n = values.shape[0]
    data = values if chunks is None else da.from_array(values, chunks=(chunks, -1))
    return xr.DataArray(
        data,
        dims=("sample", "unit"),
        coords={
            "sample": np.arange(100, 100 + n),
            "label": ("sample", np.arange(n) % 3),
            "layer": ("unit", layers),
            "channel": ("unit", np.arange(values.shape[1])),
        },
    )


def _cols(values: np.ndarray, layer: str) -> np.ndarray:
    return np.ascontiguousarray(values[:, LAYERS == layer])


def _low_rank(n: int, seed: int) -> np.ndarray:
    """Rank-2 signal with well separated variances plus tiny noise, in both layers."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2)) * np.array([5.0, 2.0])
    w = np.linalg.qr(rng.normal(size=(10, 2)))[0].T
    return z @ w + 1e-3 * rng.normal(size=(n, 10)) + 7.0


def _assert_equal_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    for k in range(a.shape[1]):
        sign = np.sign(a[:, k] @ b[:, k]) or 1.0
        np.testing.assert_allclose(a[:, k], sign * b[:, k], rtol=0, atol=atol)


def test_pca_matches_sklearn_and_closed_form() -> None:
    values = _values(60, 0)
    out = reduce(_responses(values), "pca", 3, seed=5)
    assert out.name == "projection"
    assert out.dims == ("sample", "layer", "component")
    assert out.dtype == np.float64
    assert out.shape == (60, 2, 3)
    assert list(out["layer"].values) == ["a", "b"]
    np.testing.assert_array_equal(out["component"].values, [0, 1, 2])
    np.testing.assert_array_equal(out["sample"].values, np.arange(100, 160))
    np.testing.assert_array_equal(out["label"].values, np.arange(60) % 3)
    assert out["explained_variance_ratio"].dims == ("layer", "component")
    assert "explained_variance_ratio" not in out.indexes
    assert out.attrs == {
        "method": "pca",
        "n_components": 3,
        "seed": 5,
        "introspector": "reduce",
        "tmx_version": __version__,
    }
    for name in ("a", "b"):
        x = _cols(values, name)
        model = PCA(n_components=3, random_state=5)
        exp = model.fit_transform(x)
        got = out.sel(layer=name).values
        np.testing.assert_allclose(got, exp, rtol=0, atol=1e-10)
        ratio = out["explained_variance_ratio"].sel(layer=name).values
        np.testing.assert_allclose(ratio, model.explained_variance_ratio_, rtol=0, atol=1e-12)
        # closed form: centred data times the top right singular vectors, up to sign
        centred = x - x.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        _assert_equal_up_to_sign(got, centred @ vt[:3].T, atol=1e-10)
        np.testing.assert_allclose(ratio, s[:3] ** 2 / np.sum(s**2), rtol=0, atol=1e-12)
        assert ratio[0] >= ratio[1] >= ratio[2] > 0


def test_pca_numpy_dask_and_unit_order_give_identical_results() -> None:
    values = _values(40, 1)
    eager = reduce(_responses(values), "pca", 2)
    lazy = reduce(_responses(values, chunks=(7, 13, 20)), "pca", 2)
    xr.testing.assert_identical(eager, lazy)
    # interleaved layers (units not contiguous) pick the same columns
    order = np.array([0, 4, 1, 5, 2, 6, 3, 7, 8, 9])
    mixed = reduce(_responses(values[:, order], chunks=(7, 13, 20), layers=LAYERS[order]), "pca")
    np.testing.assert_allclose(mixed.values, eager.values, rtol=0, atol=1e-10)
    assert list(mixed["layer"].values) == ["a", "b"]


def test_incremental_pca_matches_partial_fit_on_the_same_chunks() -> None:
    values = _values(60, 2)
    # the 2-row chunk is merged into the next one: partial_fit needs >= dims rows
    out = reduce(_responses(values, chunks=(2, 13, 5, 40)), "incremental_pca", 3)
    assert out.attrs == {
        "method": "incremental_pca",
        "n_components": 3,
        "seed": 0,
        "batch_size": "dask chunks",
        "introspector": "reduce",
        "tmx_version": __version__,
    }
    blocks = [slice(0, 15), slice(15, 20), slice(20, 60)]
    for name in ("a", "b"):
        x = _cols(values, name)
        model = IncrementalPCA(n_components=3)
        for sl in blocks:
            model.partial_fit(x[sl])
        np.testing.assert_allclose(out.sel(layer=name).values, model.transform(x), atol=1e-10)
        np.testing.assert_allclose(
            out["explained_variance_ratio"].sel(layer=name).values,
            model.explained_variance_ratio_,
            atol=1e-12,
        )
    # a given batch_size gives the same partition, so the same numbers, for numpy and dask;
    # the trailing block of 60 - 3 * 19 = 3 < dims rows is merged into the previous one
    eager = reduce(_responses(values), "incremental_pca", 4, batch_size=19)
    lazy = reduce(_responses(values, chunks=(7, 13, 40)), "incremental_pca", 4, batch_size=19)
    xr.testing.assert_identical(eager, lazy)
    assert eager.attrs["batch_size"] == 19
    x = _cols(values, "b")
    model = IncrementalPCA(n_components=4)
    for sl in (slice(0, 19), slice(19, 38), slice(38, 60)):
        model.partial_fit(x[sl])
    np.testing.assert_allclose(eager.sel(layer="b").values, model.transform(x), atol=1e-10)


def test_incremental_pca_finds_the_pca_subspace() -> None:
    values = _low_rank(400, 3)
    full = reduce(_responses(values), "pca", 2)
    inc = reduce(_responses(values, chunks=(50,) * 8), "incremental_pca", 2)
    small = reduce(_responses(values), "incremental_pca", 2, batch_size=32)
    for name in ("a", "b"):
        ref = full.sel(layer=name).values
        _assert_equal_up_to_sign(inc.sel(layer=name).values, ref, atol=1e-3)
        _assert_equal_up_to_sign(small.sel(layer=name).values, ref, atol=1e-3)
    np.testing.assert_allclose(
        inc["explained_variance_ratio"].values, full["explained_variance_ratio"].values, atol=1e-6
    )


class _Computes(Callback):
    """Marks the start of every dask compute in a shared event list."""

    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events

    def _start(self, dsk) -> None:
        self.events.append("compute")


def test_pca_equals_sklearn_on_float32_and_dask_reads_every_layer_in_one_pass() -> None:
    """The in-memory fast path (no copy of (sample, unit) responses, indexes reused) and the
    dask path (all layers in one compute) give sklearn's PCA of each layer, up to sign."""
    values = _low_rank(80, 5).astype(np.float32)
    eager = reduce(_responses(values), "pca", 2)
    events: list = []
    with _Computes(events):
        lazy = reduce(_responses(values, chunks=(20, 20, 40)), "pca", 2)
    assert events == ["compute"]  # both layers from one dask pass
    xr.testing.assert_identical(eager, lazy)
    assert eager.indexes["sample"].equals(_responses(values).indexes["sample"])
    for name in ("a", "b"):
        x = _cols(values, name)
        direct = PCA(n_components=2, random_state=0).fit_transform(x)
        _assert_equal_up_to_sign(eager.sel(layer=name).values, direct, atol=1e-4)
        exact = PCA(n_components=2, random_state=0).fit_transform(x.astype(np.float64))
        np.testing.assert_allclose(eager.sel(layer=name).values, exact, rtol=0, atol=1e-10)


def test_incremental_pca_computes_one_chunk_at_a_time() -> None:
    values = _values(60, 4)
    events: list = []

    def tag(block: np.ndarray, block_info=None) -> np.ndarray:
        events.append(block_info[None]["chunk-location"][0])
        return block

    chunks = (7, 13, 20, 20)
    lazy = da.from_array(values, chunks=(chunks, -1)).map_blocks(
        tag, dtype=np.float64, meta=np.empty((0, 0))
    )
    responses = _responses(values).copy(data=lazy)
    with _Computes(events):
        out = reduce(responses, "incremental_pca", 2)
    assert events, "nothing was computed"
    segments: list[list[int]] = []
    for event in events:
        if event == "compute":
            segments.append([])
        else:
            segments[-1].append(event)
    # two passes (partial_fit, transform) per layer, each compute touching one chunk
    assert len(segments) == 2 * 2 * len(chunks)
    assert all(len(seg) == 1 for seg in segments), segments
    assert sorted(i for seg in segments for i in seg) == sorted(list(range(4)) * 4)
    xr.testing.assert_identical(out, reduce(_responses(values, chunks=chunks), "incremental_pca"))


def test_dead_layer_and_dead_units() -> None:
    values = _values(30, 5)
    values[:, LAYERS == "a"] = 1.5  # every unit of layer a is dead
    responses = _responses(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pca = reduce(responses, "pca", 2)
        inc = reduce(responses, "incremental_pca", 2, batch_size=10)
    for out in (pca, inc):
        np.testing.assert_array_equal(out.sel(layer="a").values, 0.0)
        assert np.isnan(out["explained_variance_ratio"].sel(layer="a").values).all()
        assert np.isfinite(out.sel(layer="b").values).all()
    # t-SNE on identical points crashes scikit-learn's Barnes-Hut: projected to 0 instead
    tsne = reduce(responses, "tsne", 2, max_iter=250)
    np.testing.assert_array_equal(tsne.sel(layer="a").values, 0.0)
    exp = TSNE(n_components=2, random_state=0, perplexity=29 / 3, max_iter=250).fit_transform(
        _cols(values, "b")
    )
    np.testing.assert_allclose(tsne.sel(layer="b").values, exp, rtol=0, atol=1e-6)


def test_tsne_matches_sklearn_and_small_sample_defaults() -> None:
    values = _values(60, 6)
    out = reduce(_responses(values), "tsne", 2, seed=3, max_iter=250)
    assert out.dims == ("sample", "layer", "component") and out.shape == (60, 2, 2)
    assert "explained_variance_ratio" not in out.coords
    # default perplexity min(30, (n - 1) / 3): every other sample is a neighbour candidate
    assert out.attrs == {
        "method": "tsne",
        "n_components": 2,
        "seed": 3,
        "max_iter": 250,
        "perplexity": pytest.approx(59 / 3),
        "introspector": "reduce",
        "tmx_version": __version__,
    }
    for name in ("a", "b"):
        model = TSNE(n_components=2, random_state=3, perplexity=59 / 3, max_iter=250)
        exp = model.fit_transform(_cols(values, name))
        np.testing.assert_allclose(out.sel(layer=name).values, exp, rtol=0, atol=1e-6)
    given = reduce(_responses(values), "tsne", 2, layers=["a"], perplexity=10.0, max_iter=250)
    assert given.attrs["perplexity"] == 10.0
    exp = TSNE(n_components=2, random_state=0, perplexity=10.0, max_iter=250).fit_transform(
        _cols(values, "a")
    )
    np.testing.assert_allclose(given.values[:, 0], exp, rtol=0, atol=1e-6)
    # 10 samples: perplexity 3 (scikit-learn's default 30 would be refused);
    # dims > 3: exact t-SNE, recorded as tsne_method
    few = _values(10, 7)
    small = reduce(_responses(few), "tsne", 4, layers=["b"], max_iter=250)
    assert small.attrs["perplexity"] == pytest.approx(3.0)
    assert small.attrs["tsne_method"] == "exact" and small.attrs["method"] == "tsne"
    exp = TSNE(
        n_components=4, random_state=0, perplexity=3.0, method="exact", max_iter=250
    ).fit_transform(_cols(few, "b"))
    np.testing.assert_allclose(small.values[:, 0], exp, rtol=0, atol=1e-6)
    lazy = reduce(
        _responses(values, chunks=(25, 35)), "tsne", 2, seed=3, max_iter=250, layers=["a"]
    )
    xr.testing.assert_identical(out.sel(layer=["a"]), lazy)


def test_umap_matches_umap_learn() -> None:
    umap = pytest.importorskip("umap")
    values = _values(60, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = reduce(_responses(values), "umap", 2, seed=1, min_dist=0.2)
        few = reduce(_responses(values[:10]), "umap", 2, layers=["a"])
    assert not [w for w in caught if "n_neighbors" in str(w.message) or "n_jobs" in str(w.message)]
    assert out.attrs == {
        "method": "umap",
        "n_components": 2,
        "seed": 1,
        "min_dist": 0.2,
        "n_neighbors": 15,
        "n_jobs": 1,
        "introspector": "reduce",
        "tmx_version": __version__,
    }
    for name in ("a", "b"):
        model = umap.UMAP(n_components=2, random_state=1, min_dist=0.2, n_jobs=1)
        exp = model.fit_transform(_cols(values, name))
        np.testing.assert_allclose(out.sel(layer=name).values, exp, rtol=0, atol=1e-6)
    assert few.attrs["n_neighbors"] == 9
    exp = umap.UMAP(n_components=2, random_state=0, n_neighbors=9, n_jobs=1).fit_transform(
        _cols(values[:10], "a")
    )
    np.testing.assert_allclose(few.values[:, 0], exp, rtol=0, atol=1e-6)


def test_pacmap_matches_pacmap(caplog: pytest.LogCaptureFixture) -> None:
    pacmap = pytest.importorskip("pacmap")
    values = _values(60, 9)
    with caplog.at_level(logging.WARNING):
        out = reduce(_responses(values), "pacmap", 2, seed=2)
        few = reduce(_responses(values[:12]), "pacmap", 2, seed=2, layers=["b"])
    assert not [r for r in caplog.records if "reorganized" in r.getMessage()]
    assert not [r for r in caplog.records if "will be reduced" in r.getMessage()]
    assert out.attrs == {
        "method": "pacmap",
        "n_components": 2,
        "seed": 2,
        "n_neighbors": 10,
        "introspector": "reduce",
        "tmx_version": __version__,
    }
    for name in ("a", "b"):
        exp = pacmap.PaCMAP(n_components=2, random_state=2).fit_transform(_cols(values, name))
        np.testing.assert_allclose(out.sel(layer=name).values, exp, rtol=0, atol=1e-6)
    # 12 samples: 3 near + round(1.5) = 2 mid-near + 6 further pairs = 11 < 12
    assert few.attrs["n_neighbors"] == 3
    exp = pacmap.PaCMAP(n_components=2, random_state=2, n_neighbors=3).fit_transform(
        _cols(values[:12], "b")
    )
    np.testing.assert_allclose(few.values[:, 0], exp, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="at least 4 samples"):
        reduce(_responses(values[:3]), "pacmap", 2)


@pytest.mark.parametrize(("module", "package"), [("umap", "umap-learn"), ("pacmap", "pacmap")])
def test_missing_optional_package(
    monkeypatch: pytest.MonkeyPatch, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    message = f'method="{module}" needs the optional package {package}'
    with pytest.raises(ImportError, match=message) as info:
        reduce(_responses(_values(20, 10)), module, 2)
    assert f'pip install "tmx-measures[{module}]"' in str(info.value)


def test_cube_inputs_and_layer_selection() -> None:
    base = _responses(_values(30, 11))
    cube = xr.concat([base, base * 2.0], dim="transformation").transpose(
        "sample", "transformation", "unit"
    )
    second = reduce(cube, "pca", 2, transformation=1)
    xr.testing.assert_allclose(second, reduce(base * 2.0, "pca", 2), atol=1e-10)
    with pytest.raises(ValueError, match="transformation"):
        reduce(cube, "pca", 2)
    stacked = reduce(cube, "pca", 2, transformation="stack", layers=["b"])
    assert stacked.sizes == {"sample": 60, "layer": 1, "component": 2}
    np.testing.assert_array_equal(stacked["source_sample"].values, np.repeat(np.arange(30), 2))
    np.testing.assert_array_equal(stacked["source_transformation"].values, np.tile([0, 1], 30))
    rows = np.asarray(cube.values).reshape(60, 10)[:, LAYERS == "b"]
    exp = PCA(n_components=2, random_state=0).fit_transform(rows)
    np.testing.assert_allclose(stacked.values[:, 0], exp, rtol=0, atol=1e-10)
    both = reduce(base, "pca", 2)
    ordered = reduce(base, "pca", 2, layers=["b", "a"])
    assert list(ordered["layer"].values) == ["b", "a"]
    xr.testing.assert_identical(ordered.sel(layer=["a", "b"]), both)
    # a DataArray without a layer coordinate is one layer "responses"
    bare = reduce(base.drop_vars("layer"), "pca", 2)
    assert list(bare["layer"].values) == ["responses"]


def test_errors() -> None:
    values = _values(20, 12)
    responses = _responses(values)
    with pytest.raises(ValueError, match="projection methods"):
        reduce(responses, "mds")
    for bad in (0, 2.0, True, "2"):
        with pytest.raises(ValueError, match="n_components"):
            reduce(responses, "pca", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_components=5 exceeds the 4 units of layer 'a'"):
        reduce(responses, "pca", 5)
    assert reduce(responses, "pca", 5, layers=["b"]).sizes["component"] == 5
    with pytest.raises(ValueError, match=r"unknown layers \['zzz'\].*\['a', 'b'\]"):
        reduce(responses, layers=["zzz"])
    with pytest.raises(ValueError, match="at least one layer"):
        reduce(responses, layers=[])
    with pytest.raises(ValueError, match="needs at least 3 samples; got 2"):
        reduce(_responses(values[:2]), "pca", 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        reduce(_responses(values[:1]), "tsne", 1)
    with pytest.raises(ValueError, match="seed"):
        reduce(responses, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size is only used"):
        reduce(responses, "pca", batch_size=10)
    with pytest.raises(ValueError, match="batch_size must be >= n_components=3"):
        reduce(responses, "incremental_pca", 3, batch_size=2)
    with pytest.raises(ValueError, match="random_state"):
        reduce(responses, "tsne", random_state=3)
    bad = values.copy()
    bad[4, 8] = np.nan
    for method in ("pca", "incremental_pca", "tsne"):
        with pytest.raises(ValueError, match="layer 'b' contain non-finite values"):
            reduce(_responses(bad, chunks=(10, 10)), method, 2, layers=["b", "a"])
    bad[4, 8] = np.inf
    with pytest.raises(ValueError, match="layer 'b' contain non-finite"):
        reduce(_responses(bad), "pca", 2, layers=["b"])
    assert reduce(_responses(bad), "pca", 2, layers=["a"]).sizes["layer"] == 1


def test_options_and_attrs_are_serialisable() -> None:
    values = _values(30, 13)
    out = reduce(_responses(values), "pca", 2, seed=None, whiten=True, svd_solver="full")
    assert out.attrs == {
        "method": "pca",
        "n_components": 2,
        "seed": "None",
        "whiten": 1,
        "svd_solver": "full",
        "introspector": "reduce",
        "tmx_version": __version__,
    }
    exp = PCA(n_components=2, whiten=True, svd_solver="full").fit_transform(_cols(values, "a"))
    np.testing.assert_allclose(out.sel(layer="a").values, exp, rtol=0, atol=1e-10)
    back = xr.open_dataset(out.to_dataset().to_netcdf(engine="scipy"), engine="scipy")
    xr.testing.assert_identical(back["projection"], out)


def test_dims_is_a_deprecated_alias_of_n_components() -> None:
    responses = _responses(_values(20, 12))
    new = reduce(responses, "pca", n_components=3)
    with pytest.warns(DeprecationWarning, match=r"dims= is deprecated.*n_components="):
        old = reduce(responses, "pca", dims=3)
    np.testing.assert_array_equal(old.values, new.values)
    assert old.attrs == new.attrs and old.sizes["component"] == 3
    with pytest.raises(TypeError, match="both dims="):
        reduce(responses, "pca", 3, dims=3)
