"""tmx.flows: progress bars of transform/inverse, fit's logging and its renamed memory keyword,
lazy in → lazy out."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from tmx import flows


def _cube(n: int = 12, t: int = 4, units: int = 3, chunks: int | None = None) -> xr.DataArray:
    values = np.random.default_rng(0).normal(size=(n, t, units)).astype(np.float32)
    data = values if chunks is None else da.from_array(values, chunks=(chunks, -1, -1))
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords={
            "sample": np.arange(n),
            "transformation": np.arange(t),
            "layer": ("unit", ["h"] * units),
            "channel": ("unit", np.arange(units)),
            "y": ("unit", [-1] * units),
            "x": ("unit", [-1] * units),
        },
    )


def _ready_flow(units: int = 3) -> flows.Flow:
    flow = flows.flow(units, blocks=1, hidden=(4,), seed=0)
    flow(np.random.default_rng(1).normal(size=(8, units)).astype(np.float32))  # ActNorm init
    return flow


def _small_fit(pr: xr.Dataset, **options):
    args = dict(dimensions=[1, 1, 1], epochs=2, batch_size=16, jit=False, progress=False)
    return flows.fit(pr, flow=flows.flow(3, blocks=1, hidden=(4,), seed=0), **{**args, **options})


def test_transform_and_inverse_progress(capsys) -> None:
    flow = _ready_flow()
    x = np.random.default_rng(2).normal(size=(10, 3)).astype(np.float32)
    z = flows.transform(flow, x, batch_size=4, progress=True)  # 3 calls of 4 rows
    shown = capsys.readouterr()
    assert "3/3" in shown.out + shown.err
    back = flows.inverse(flow, z, batch_size=4, progress=True)
    shown = capsys.readouterr()
    assert "3/3" in shown.out + shown.err
    np.testing.assert_allclose(back.values, x, atol=1e-5)
    for progress in (False, None):  # None: not interactive under pytest
        flows.inverse(
            flow, flows.transform(flow, x, batch_size=4, progress=progress), progress=progress
        )
        shown = capsys.readouterr()
        assert shown.out + shown.err == ""
    with pytest.raises(ValueError, match="progress must be"):
        flows.transform(flow, x, progress=1)
    # a dask-backed input is lazy: nothing runs (and nothing is shown) until it is computed
    lazy = flows.transform(flow, da.from_array(x, chunks=(5, 3)), batch_size=4, progress=True)
    assert isinstance(lazy.data, da.Array)
    shown = capsys.readouterr()
    assert shown.out + shown.err == ""
    np.testing.assert_allclose(lazy.values, z.values, rtol=1e-6, atol=1e-6)


def test_transform_of_a_dask_cube_stays_lazy_and_equals_numpy() -> None:
    flow = _ready_flow()
    eager = flows.transform(flow, _cube())
    lazy = flows.transform(flow, _cube(chunks=5))
    assert isinstance(lazy.data, da.Array)
    back = flows.inverse(flow, lazy)
    assert isinstance(back.data, da.Array)
    np.testing.assert_allclose(lazy.values, eager.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back.values, _cube().values, atol=1e-5)


def test_fit_memory_limit_is_a_deprecated_memory() -> None:
    pr = flows.pairs(_cube(), ("sample", "transformation"), n=80, seed=0)
    _, history = _small_fit(pr, memory=4096)
    with pytest.warns(DeprecationWarning, match="memory_limit= is deprecated.*memory="):
        _, legacy = _small_fit(pr, memory_limit=4096)
    xr.testing.assert_allclose(
        legacy.drop_vars("seconds"), history.drop_vars("seconds"), rtol=0, atol=0
    )
    with pytest.raises(TypeError, match="both memory_limit="):
        _small_fit(pr, memory_limit=4096, memory=8192)
    with pytest.raises(ValueError, match="memory must be"):
        _small_fit(pr, memory="lots")


def test_fit_memory_as_a_size_spills_lazy_pairs(caplog: pytest.LogCaptureFixture) -> None:
    lazy = flows.pairs(_cube(chunks=4), ("sample", "transformation"), n=80, seed=0)
    eager = flows.pairs(_cube(), ("sample", "transformation"), n=80, seed=0)
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        _, spilled = _small_fit(lazy, memory="1KB")  # 80 pairs × 3 units × 4 B × 2 > 1 kB
    assert spilled.attrs["source"] == "zarr"
    messages = [r.getMessage() for r in caplog.records if r.name == "tmx"]
    assert any("spilling them to Zarr" in m for m in messages)
    assert any(m.startswith("fit: 3 units") for m in messages)
    epochs = [m for m in messages if m.startswith("fit: epoch ")]
    assert [m.split()[2] for m in epochs] == ["1/2", "2/2"]
    assert all(
        r.levelno == logging.DEBUG
        for r in caplog.records
        if r.getMessage().startswith("fit: epoch")
    )
    # the same pairs in memory train to the same history
    _, in_memory = _small_fit(eager)
    assert in_memory.attrs["source"] == "memory"
    np.testing.assert_allclose(spilled["loss"].values, in_memory["loss"].values, rtol=1e-6)


def test_fit_logs_early_stopping(caplog: pytest.LogCaptureFixture) -> None:
    pr = flows.pairs(_cube(), ("sample", "transformation"), n=80, seed=0)
    with caplog.at_level(logging.INFO, logger="tmx"):
        _, history = _small_fit(pr, epochs=6, patience=1, learning_rate=0.0)
    assert history.attrs["stopped_early"] == 1
    assert any("stopped early" in r.getMessage() for r in caplog.records)
    assert not any("epoch 1/" in r.getMessage() for r in caplog.records)  # DEBUG only
