"""Smoke test of the main job (make demo) on a tiny configuration."""

from __future__ import annotations

import csv
import dataclasses

import matplotlib

matplotlib.use("Agg")

from tmx import demo


def test_demo_pipeline_runs_and_writes_its_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMX_CACHE_DIR", str(tmp_path / "cache"))
    config = dataclasses.replace(demo.TINY, out=tmp_path / "out")
    paths = demo.run(config)
    for name in [
        "nv_per_layer.png",
        "accuracy_vs_nv.png",
        "nv_units.png",
        "rotations.png",
        "anova_per_layer.png",
        "goodfellow_per_layer.png",
        "convergence.png",
    ]:
        assert paths[name].exists() and paths[name].stat().st_size > 1000
    rows = list(csv.reader(paths["summary.csv"].open()))
    assert rows[0][0] == "layer" and "NV rotation estimate" in rows[0]
    assert "NV rotation, unit mean estimate" in rows[0]
    assert [r[0] for r in rows[1:]] == [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "flatten",
        "dense",
        "logits",
    ]
    assert paths["analysis.csv"].read_text().count("\n") == 7 * 7 + 1  # groups x layers + header
    printed = capsys.readouterr().out
    assert "written:" in printed and str(paths["summary.csv"]) in printed
    assert (tmp_path / "cache").exists()  # the cached model went where we asked
    page = paths["report.html"].read_text(encoding="utf-8")
    assert page.count('<circle class="pt"') == 3 * 24  # pool2, dense, logits × tiny samples
    assert page.count("data:image/png;base64,") == 3 * 2 * 8  # most / least familiar digits
    assert paths["report.zarr"].is_dir()
    assert "PFA keeps" in printed and "least familiar digit" in printed
