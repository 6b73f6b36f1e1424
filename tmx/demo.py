"""The project's main job, run by ``make demo``: a complete invariance analysis of a small CNN.

1. trains (or loads from the user cache) a small CNN on scikit-learn's digits, resized to 28×28;
2. builds the activation cube of the test digits under 16 rotations, with a progress bar, saves
   it to Zarr and reopens it (everything after this reads the store);
3. per layer, with confidence intervals: normalized variance (NV) under rotations and
   translations, same-equivariance (NVSE) under quarter turns — each the layer's ratio of
   means Σ TV / Σ SV, jackknife bias-corrected (the value that does not move with the number
   of digits) with its jackknife interval, beside the plain mean of the unit NVs, labeled —,
   the fraction of units whose rotation effect is significant (ANOVA, Bonferroni) and
   Goodfellow's firing-rate score (bootstrap intervals), and NV against the number of digits
   (``tmx.convergence``);
4. the seed package's analysis: the measure beside the accuracy for its seven groups;
5. writes ``demo-output/``: PNG plots, ``summary.csv`` (per layer) and ``analysis.csv``
   (per group), and prints the table and where everything went.

Run ``python -m tmx.demo --help`` for the options (``--tiny`` runs a seconds-long version).
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Config:
    out: Path = Path("demo-output")
    samples: int | None = None  # test digits used (None: all)
    rotations: int = 16
    shifts: tuple[int, ...] = (-4, -2, 0, 2, 4)
    boot_loop: int = 30  # bootstrap replicates of the measures recomputed per replicate
    group_n: int = 8  # transformations per seed group
    epochs: int = 8
    size: int = 28
    seed: int = 0


TINY = Config(samples=24, rotations=4, shifts=(-2, 0, 2), boot_loop=3, group_n=2, epochs=1, size=16)


def _step(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f}s] {message}", flush=True)


def run(config: Config = Config()) -> dict[str, Path]:
    """Run the demo; returns the paths written."""
    import shutil

    import tensorflow as tf

    import tmx
    from tmx import transforms as T

    tf.get_logger().setLevel("ERROR")  # one tf.function per cube: retracing notes are noise
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = tmx.datasets.digits(config.size, seed=config.seed)
    model = tmx.models.trained_small_cnn(seed=config.seed, epochs=config.epochs, size=config.size)
    x = data.as_dataarray("test")
    if config.samples is not None:
        x = x.isel(sample=slice(0, config.samples))
    y = x["label"].values
    _step(f"model {model.name} ready; {x.sizes['sample']} test digits of {config.size}px", start)

    # fill with the standardised background (raw 0), not 0, so corners look like background
    background = float(-data.mean / data.std)
    rotations = T.rotation(
        np.arange(config.rotations) * 360.0 / config.rotations, fill_value=background
    )
    shifts = T.translation(
        np.repeat(config.shifts, len(config.shifts)),
        np.tile(config.shifts, len(config.shifts)),
        fill_value=background,
    )
    quarter_turns = T.rot90([0, 1, 2, 3])
    store = out / "rotation-cube.zarr"
    if store.exists():
        shutil.rmtree(store)
    print("computing the rotation cube and saving it to Zarr:", flush=True)
    tmx.save(tmx.activations(model, x, rotations), store, progress=True)
    cube = tmx.open(store)
    _step(f"cube {dict(cube.sizes)} saved to {store} and reopened", start)

    shift_cube = tmx.activations(model, x, shifts).load()
    turn_cube = tmx.activations(model, x, quarter_turns).load()
    inverted = tmx.invert(turn_cube)

    # the layer value: Σ TV / Σ SV with the jackknife's bias correction and interval (the
    # default of tmx.bootstrap for the variance family); the unit mean moves with N
    layer_value = {"by_layer": "ratio_of_means"}
    results = {
        "NV rotation": tmx.bootstrap(tmx.normalized_variance, cube, **layer_value),
        "NV translation": tmx.bootstrap(tmx.normalized_variance, shift_cube, **layer_value),
        "NVSE rot90": tmx.bootstrap(tmx.normalized_variance, inverted, **layer_value),
        "NV rotation, unit mean": tmx.bootstrap(tmx.normalized_variance, cube, by_layer="mean"),
    }
    _step("normalized variance and same-equivariance with jackknife intervals", start)
    curve = tmx.convergence(tmx.normalized_variance, cube, seed=config.seed)
    _step(f"NV against the number of digits: sizes {curve['size'].values.tolist()}", start)
    loaded = cube.load()
    results["ANOVA fraction rotation"] = tmx.bootstrap(
        _anova_reject,
        loaded,
        n=config.boot_loop,
        seed=config.seed,
        over="sample",
        by_layer="mean",
    )
    results["Goodfellow rotation"] = tmx.bootstrap(
        _goodfellow_score,
        loaded,
        n=config.boot_loop,
        seed=config.seed,
        over="sample",
        by_layer="mean",
    )
    _step("ANOVA fraction and Goodfellow score with bootstrap intervals", start)

    groups = tmx.transforms.seed_groups(config.group_n, size=config.size, fill_value=background)
    analysis = tmx.analyze(model, x, y, groups, layers=list(cube.attrs["layers"]), zero_div="nan")
    _step("analysis over the seed package's seven groups", start)

    introspection = _introspect(loaded, x, out, config)
    _step("introspection: PFA, inactive units, data set report", start)

    paths = _write(out, results, analysis, cube, rotations, x, config)
    paths["convergence.png"] = _save_convergence(curve, out)
    paths.update(introspection.pop("paths"))
    _print_table(results, analysis, paths)
    _print_introspection(introspection)
    _step("done", start)
    return paths


def _save_convergence(curve, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tmx.plot

    fig = tmx.plot.convergence(curve, title="NV under rotations against the number of digits")
    path = out / "convergence.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _anova_reject(cube):
    import tmx

    return tmx.anova_invariance(cube, alpha=0.01).reject.astype(float).rename("anova_reject")


def _goodfellow_score(cube):
    import tmx

    # the reference is rotation(0), the untransformed digit; the local rate is taken over all
    # cells (local="top", the 2009 paper's, selects a few samples: too discrete to bootstrap)
    return tmx.goodfellow(cube, reference=0, local="all")["score"].rename("goodfellow_score")


def _introspect(cube, x, out, config) -> dict:
    """PFA and IUA over every rotated digit; a data set report of the unrotated digits."""
    from tmx import introspect as ti

    recipe = ti.pfa_recipe(ti.pfa(cube, transformation="stack"), "kl")
    inactive = ti.iua(cube, transformation="stack")
    layers = [n for n in ("pool2", "dense", "logits") if n in cube.attrs["layers"]]
    report = ti.report(cube, transformation=0, layers=layers, seed=config.seed)
    html = out / "report.html"
    ti.report_html(report, html, images=x.values, title="tmx demo: test digits")
    store = out / "report.zarr"
    if store.exists():
        import shutil

        shutil.rmtree(store)
    ti.save_report(report, store)
    return {
        "recipe": recipe,
        "inactive": inactive,
        "report": report,
        "paths": {"report.html": html, "report.zarr": store},
    }


def _print_introspection(result: dict) -> None:
    recipe, inactive, report = result["recipe"], result["inactive"], result["report"]
    print()
    print("introspection over every rotated digit (PFA-KL on max-pooled channels; inactive units)")
    print(f"  {'layer':10s} {'channels':>9s} {'PFA keeps':>10s} {'inactive (mean fraction)':>26s}")
    for name in recipe.layer.values:
        units = int(inactive.n_units.sel(layer=name))
        frac = float(inactive.mean_inactive.sel(layer=name)) / units
        print(
            f"  {name!s:10s} {int(recipe.original.sel(layer=name)):9d} "
            f"{int(recipe.recommended.sel(layer=name)):10d} {frac:26.3f}"
        )
    print("data set report (unrotated digits):")
    for name in report.layer.values:
        fam = report.familiarity.sel(layer=name)
        least = int(report.sample.values[int(np.argmin(fam.values))])
        dup = int((report.duplicate_cluster.sel(layer=name) >= 0).sum())
        print(f"  {name!s:10s} least familiar digit: sample {least}; near-duplicates: {dup}")


def _write(out, results, analysis, cube, rotations, x, config) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tmx

    paths: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths[name] = path

    curves = [  # (file, series, title, y label)
        (
            "nv_per_layer.png",
            ["NV rotation", "NV translation", "NVSE rot90"],
            "Invariance per layer",
            None,
        ),
        (
            "anova_per_layer.png",
            ["ANOVA fraction rotation"],
            "Units with a significant rotation effect (ANOVA, Bonferroni)",
            "fraction of units",
        ),
        (
            "goodfellow_per_layer.png",
            ["Goodfellow rotation"],
            "Goodfellow invariance score (local / global firing rate)",
            "score",
        ),
    ]
    for filename, keys, title, ylabel in curves:
        fig = tmx.plot.layer_curves({k: results[k] for k in keys}, title=title, ylabel=ylabel)
        save(fig, filename)
    nv_units = tmx.normalized_variance(cube, zero_div="nan")
    spatial = [n for n in cube.attrs["layers"] if (cube.y.where(cube.layer == n) >= 0).any()]
    layer = spatial[-1] if spatial else cube.attrs["layers"][0]
    save(tmx.plot.unit_heatmap(nv_units, layer, title=f"NV per unit, {layer}"), "nv_units.png")
    save(tmx.plot.accuracy_scatter(analysis), "accuracy_vs_nv.png")
    save(tmx.plot.transform_preview(rotations, x.values[:4], n_samples=4), "rotations.png")

    summary = out / "summary.csv"
    layers = [str(v) for v in results["NV rotation"].layer.values]
    with summary.open("w", newline="") as fh:
        writer = csv.writer(fh)
        stats = ("estimate", "low", "high")
        writer.writerow(["layer", *[f"{k} {s}" for k in results for s in stats]])
        for name in layers:
            row = [name]
            for res in results.values():
                if name in res.layer.values and isinstance(res, xr.DataArray):
                    row += [f"{float(res.sel(layer=name)):.6g}", "", ""]
                elif name in res.layer.values:
                    sel = res.sel(layer=name)
                    row += [f"{float(sel[s]):.6g}" for s in ("estimate", "low", "high")]
                else:
                    row += ["", "", ""]
            writer.writerow(row)
    paths["summary.csv"] = summary
    table = out / "analysis.csv"
    analysis.drop_vars("excluded").to_dataframe().to_csv(table)
    paths["analysis.csv"] = table
    paths["rotation-cube.zarr"] = out / "rotation-cube.zarr"
    return paths


def _print_table(results, analysis, paths) -> None:
    layers = [str(v) for v in results["NV rotation"].layer.values]
    keys = list(results)
    width = max(len(n) for n in layers) + 2
    print()
    print(
        "per layer: estimate [95% CI over digits]. NV, NVSE: the layer's Σ TV / Σ SV, jackknife "
        "bias-corrected, with its jackknife CI;\n'unit mean': the plain mean of the unit NVs "
        "(it moves with the number of digits). ANOVA, Goodfellow: bias-corrected bootstrap CI"
    )
    print("layer".ljust(width) + "".join(k[:24].rjust(26) for k in keys))
    for name in layers:
        cells = []
        for k in keys:
            res = results[k]
            if name not in res.layer.values:
                cells.append("—".rjust(26))
                continue
            sel = res.sel(layer=name)
            if isinstance(sel, xr.DataArray):
                cells.append(f"{float(sel):.4g}".rjust(26))
                continue
            text = f"{float(sel.estimate):.4g} [{float(sel.low):.4g}, {float(sel.high):.4g}]"
            cells.append(text.rjust(26))
        print(name.ljust(width) + "".join(cells))
    print()
    print("seed groups: overall measure vs accuracy")
    for g in analysis.group.values:
        row = analysis.sel(group=g)
        print(f"  {g!s:24s} NV {float(row.overall):7.3f}   accuracy {float(row.accuracy):.3f}")
    print()
    print("written:")
    for path in paths.values():
        print(f"  {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo-output", help="output folder")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long configuration")
    args = parser.parse_args(argv)
    config = TINY if args.tiny else Config()
    run(Config(**{**config.__dict__, "out": Path(args.out)}))


if __name__ == "__main__":
    main()
