"""Smoke test of the main job (make demo, tmx demo) on a tiny configuration, and the interval of
its ANOVA fraction and Goodfellow score against independent computations."""

from __future__ import annotations

import csv
import dataclasses

import matplotlib
import numpy as np
import pytest
import xarray as xr
from scipy import stats

matplotlib.use("Agg")

import tmx
from tmx import demo


def test_demo_pipeline_runs_and_writes_its_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMX_CACHE_DIR", str(tmp_path / "cache"))
    config = dataclasses.replace(demo.TINY, out=tmp_path / "out")
    paths = demo.run(config)
    for name in [
        "invariance_per_layer.png",
        "accuracy_vs_nv.png",
        "anova_per_layer.png",
        "goodfellow_per_layer.png",
        "convergence.png",
        # written by tmx run / tmx report
        "nv_per_layer.png",
        "nv_units.png",
        "transforms.png",
        "accuracy.png",
    ]:
        assert paths[name].exists() and paths[name].stat().st_size > 1000, name
    for name in ("layers.csv", "units.csv", "accuracy.csv", "model.keras", "digits.npy"):
        assert (tmp_path / "out" / name).exists(), name
    rows = list(csv.reader(paths["summary.csv"].open()))
    header = rows[0]
    assert header[0] == "layer" and "NV rotation estimate" in header
    assert "NV rotation, unit mean estimate" in header
    assert "NV rotation uncorrected" in header and "NV rotation interval" in header
    assert "ANOVA fraction rotation uncorrected" not in header
    assert [r[0] for r in rows[1:]] == [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "flatten",
        "dense",
        "logits",
    ]
    # every estimate lies in its own interval (issue 19, item 8); jackknife ones are centred
    checked = 0
    for row in rows[1:]:
        for i, name in enumerate(header):
            if not name.endswith(" estimate") or not row[i]:
                continue
            estimate, low, high = (float(v) for v in row[i : i + 3])
            assert low <= estimate <= high, (row[0], name)
            assert high - estimate == pytest.approx(estimate - low, rel=1e-3, abs=1e-5) or (
                low == 0.0 or high == 1.0  # a clipped fraction or score
            )
            checked += 1
    assert checked == 7 * 6 - 3  # NVSE: the spatial layers only
    assert paths["analysis.csv"].read_text().count("\n") == 7 * 7 + 1  # groups x layers + header
    printed = capsys.readouterr().out
    assert "written:" in printed and str(paths["summary.csv"]) in printed
    assert (tmp_path / "cache").exists()  # the cached model went where we asked
    page = paths["report.html"].read_text(encoding="utf-8")
    assert page.count('<circle class="pt"') == 3 * 24  # pool2, dense, logits × tiny samples
    assert page.count('alt="sample ') == 3 * 2 * 8  # most / least familiar digits
    assert "More measures (the demo)" in page and "Accuracy per transformation" in page
    assert paths["report.zarr"].is_dir()
    assert "PFA keeps" in printed and "least familiar digit" in printed


def _cube(rng, n=24, t=3, units=6, shift=0.0):
    a = rng.normal(size=(n, t, units)) + shift * np.arange(t)[None, :, None]
    return tmx.from_array({"a": a[..., :3], "b": a[..., 3:]})


def test_layer_jackknife_of_a_mean_is_the_standard_error_of_group_means():
    rng = np.random.default_rng(0)
    cube = _cube(rng)
    groups = 6
    out = demo.layer_jackknife(lambda c: c.mean(("sample", "transformation")), cube, groups)
    code = np.random.default_rng(20261206).permutation(24) % groups  # the documented groups
    a = cube.values
    for k, layer in enumerate(["a", "b"]):
        per_sample = a[:, :, 3 * k : 3 * k + 3].mean(axis=(1, 2))
        means = np.array([per_sample[code == g].mean() for g in range(groups)])
        se = means.std(ddof=1) / np.sqrt(groups)
        half = stats.t.ppf(0.975, groups - 1) * se
        sel = out.sel(layer=layer)
        assert float(sel.estimate) == pytest.approx(per_sample.mean())
        assert float(sel.se) == pytest.approx(se)
        assert float(sel.low) == pytest.approx(per_sample.mean() - half)
        assert float(sel.high) == pytest.approx(per_sample.mean() + half)


def _anova_reject(cube: xr.DataArray) -> xr.DataArray:
    """The demo's statistic: 1 where ANOVA rejects invariance at alpha = 0.01 (Bonferroni)."""
    return tmx.anova_invariance(cube, alpha=0.01).reject.astype(float).rename("anova_reject")


def test_layer_jackknife_of_the_anova_fraction_contains_it_and_stays_in_range():
    rng = np.random.default_rng(1)
    cube = _cube(rng, n=30, shift=0.6)
    out = demo.layer_jackknife(_anova_reject, cube, 10, bounds=(0.0, 1.0))
    a = cube.values
    p = np.array([stats.f_oneway(*[a[:, j, u] for j in range(3)]).pvalue for u in range(6)])
    reject = np.minimum(p * 6, 1) <= 0.01  # Bonferroni over the cube's units
    for k, layer in enumerate(["a", "b"]):
        sel = out.sel(layer=layer)
        assert float(sel.estimate) == pytest.approx(reject[3 * k : 3 * k + 3].mean())
        assert 0.0 <= float(sel.low) <= float(sel.estimate) <= float(sel.high) <= 1.0
