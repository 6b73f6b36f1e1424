"""The introspectors on dask-backed responses (same numbers as numpy; lazy where the result can
be a dask graph), their progress bars, their logging and their renamed keywords."""

from __future__ import annotations

import logging
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from tmx import introspect

N = 40
LAYERS = np.array(["a"] * 4 + ["b"] * 3)


def _responses(chunks: tuple[int, ...] | None = None, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(N, LAYERS.size))
    values[:, 1] = np.maximum(values[:, 1], 0.0)  # a ReLU-like unit: inactive about half the time
    values[:, 5] = 0.0  # a dead unit
    values[3] = values[7]  # an exact duplicate
    data = values if chunks is None else da.from_array(values, chunks=(chunks, -1))
    return xr.DataArray(
        data,
        dims=("sample", "unit"),
        coords={
            "sample": np.arange(N),
            "label": ("sample", np.arange(N) % 2),
            "layer": ("unit", LAYERS),
            "channel": ("unit", [0, 1, 2, 3, 0, 1, 2]),
            "y": ("unit", [-1] * 7),
            "x": ("unit", [-1] * 7),
        },
    )


def _lazy_vars(ds: xr.Dataset) -> list[str]:
    return sorted(str(k) for k, v in ds.data_vars.items() if isinstance(v.data, da.Array))


# -- lazy in, lazy out (or computed, and said so) ----------------------------------------------
def test_iua_is_lazy_and_equals_numpy() -> None:
    eager = introspect.iua(_responses())
    lazy = introspect.iua(_responses(chunks=(13, 27)))
    assert _lazy_vars(lazy) == [
        "inactive_count",
        "inactive_per_probe",
        "inactive_proportion",
        "mean_inactive",
        "std_inactive",
    ]
    xr.testing.assert_identical(lazy.compute(), eager)
    # and against the definition
    inactive = np.abs(_responses().values) <= 1e-8
    np.testing.assert_array_equal(eager["inactive_count"].values, inactive.sum(axis=0))
    per_probe = np.stack([inactive[:, LAYERS == g].sum(axis=1) for g in ("a", "b")], axis=1)
    np.testing.assert_array_equal(eager["inactive_per_probe"].values, per_probe)
    np.testing.assert_allclose(eager["std_inactive"].values, per_probe.std(axis=0), rtol=1e-15)


@pytest.mark.parametrize("by", [None, "label"])
def test_familiarity_scores_are_lazy_and_equal_numpy(by: str | None) -> None:
    chunks = (13, 27)
    fit_on = _responses(seed=1)
    eager = introspect.familiarity(fit_on, _responses(), n_components=2, by=by)
    lazy = introspect.familiarity(fit_on, _responses(chunks=chunks), n_components=2, by=by)
    expected = ["familiarity"] if by is None else ["familiarity", "familiarity_own"]
    assert _lazy_vars(lazy) == expected
    # the same sample blocks scored the same way: identical numbers
    assert chunks == (13, 27) and N < 4096  # numpy scores one block of N rows
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=0, atol=1e-12)
    # a lazily chunked score set equals the numpy one row by row (score_samples is per row)
    one_chunk = introspect.familiarity(fit_on, _responses(chunks=(N,)), n_components=2, by=by)
    xr.testing.assert_identical(one_chunk.compute(), eager)


def test_familiarity_own_under_the_sample_own_model() -> None:
    fit_on = _responses(seed=1)
    out = introspect.familiarity(
        fit_on, _responses(chunks=(9, 9, 9, 9, 4)), n_components=2, by="label"
    ).compute()
    label = out["label"].values
    for value in (0, 1):
        rows = label == value
        np.testing.assert_array_equal(
            out["familiarity_own"].values[rows],
            out["familiarity"].sel(label_model=value).values[rows],
        )


def test_computing_introspectors_equal_numpy_on_dask() -> None:
    """pfa, duplicates, reduce and report must compute (eigendecomposition, neighbours, fits):
    they return numpy-backed results with the numpy numbers."""
    eager, lazy = _responses(), _responses(chunks=(13, 27))
    pairs = [
        (introspect.pfa(eager), introspect.pfa(lazy)),
        (introspect.duplicates(eager), introspect.duplicates(lazy)),
        (introspect.reduce(eager, "pca", 2), introspect.reduce(lazy, "pca", 2)),
        (
            introspect.report(eager, precursor_components=2, mixture_components=1, split_min=5),
            introspect.report(lazy, precursor_components=2, mixture_components=1, split_min=5),
        ),
    ]
    for a, b in pairs:
        data = b.data_vars.values() if isinstance(b, xr.Dataset) else [b]
        assert not any(isinstance(v.data, da.Array) for v in data)
        a.attrs.pop("created", None), b.attrs.pop("created", None)
        xr.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    # the duplicate of sample 3 is found in both layers
    dup = pairs[1][1]["duplicate_cluster"].values
    assert (dup[3] == dup[7]).all() and (dup[3] >= 0).all()


# -- progress bars -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "call", "shown"),
    [
        ("pfa", lambda r, p: introspect.pfa(r, progress=p), "2/2"),
        ("familiarity", lambda r, p: introspect.familiarity(r, progress=p), "2/2"),
        ("duplicates", lambda r, p: introspect.duplicates(r, progress=p), "2/2"),
        ("reduce", lambda r, p: introspect.reduce(r, progress=p), "2/2"),
        ("report", lambda r, p: introspect.report(r, precursor_components=2, progress=p), "5/5"),
    ],
)
def test_progress_true_shows_a_bar_false_nothing(name, call, shown, capsys) -> None:
    responses = _responses(chunks=(20, 20)) if name == "pfa" else _responses()
    call(responses, True)
    captured = capsys.readouterr()
    assert shown in captured.out + captured.err, name
    call(responses, False)
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""
    call(responses, None)  # None: quiet under pytest (not interactive)
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""
    with pytest.raises(ValueError, match="progress must be"):
        call(responses, "yes")


# -- logging -----------------------------------------------------------------------------------
def test_report_logs_its_stages(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tmx"):
        introspect.report(_responses(), precursor_components=2)
    messages = [r.getMessage() for r in caplog.records if r.name == "tmx"]
    for stage in ("PCA precursor", "near-duplicates", "pca projection", "familiarity"):
        assert any(stage in m for m in messages), stage
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        caplog.clear()
        introspect.familiarity(_responses(), n_components=1)
    assert any("fitting layer 'b'" in r.getMessage() for r in caplog.records)


# -- renamed keywords --------------------------------------------------------------------------
def test_familiarity_components_is_a_deprecated_n_components() -> None:
    r = _responses()
    new = introspect.familiarity(r, n_components=2)
    with pytest.warns(DeprecationWarning, match="components= is deprecated.*n_components="):
        old = introspect.familiarity(r, components=2)
    xr.testing.assert_identical(old, new)
    assert new.attrs["n_components"] == 2
    with pytest.raises(TypeError, match="both components="):
        introspect.familiarity(r, components=2, n_components=3)


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [("reduce_dims", "precursor_components", 3), ("components", "mixture_components", 2)],
)
def test_report_renamed_keywords(old: str, new: str, value: int) -> None:
    r = _responses()
    fresh = introspect.report(r, **{new: value})
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated.*{new}="):
        legacy = introspect.report(r, **{old: value})
    fresh.attrs.pop("created"), legacy.attrs.pop("created")
    xr.testing.assert_identical(legacy, fresh)
    assert fresh.attrs[new] == value
    with pytest.raises(TypeError, match=f"both {old}="):
        introspect.report(r, **{old: value, new: value + 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        introspect.report(r, **{new: value})


def test_report_precursor_none_uses_raw_responses_through_old_name() -> None:
    r = _responses()
    with pytest.warns(DeprecationWarning):
        legacy = introspect.report(r, reduce_dims=None)
    assert legacy.attrs["precursor_components"] == "None"
    np.testing.assert_array_equal(legacy["reduced_dims"].values, [4, 3])
