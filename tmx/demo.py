"""The project's main job, run by ``make demo`` (``tmx demo``): the command line on the digits.

1. trains (or loads from the user cache) a small CNN on scikit-learn's digits, resized to 28×28,
   and writes it, the test digits and their labels to ``model.keras``, ``digits.npy`` and
   ``labels.npy`` in the output folder;
2. runs ``tmx run`` on those files (``tmx.cli.run``) under 16 rotations: the cube is saved to
   ``cube.zarr`` (everything after this reads the store) with the accuracy per rotation;
3. per layer, with confidence intervals: normalized variance (NV) under rotations and
   translations, same-equivariance (NVSE) under quarter turns — each the layer's ratio of
   means Σ TV / Σ SV, jackknife bias-corrected (the value that does not move with the number
   of digits) with its jackknife interval, centred on the corrected value, the uncorrected
   ratio beside it — the plain mean of the unit NVs (labeled "unit mean"; dead units, SV = 0,
   left out), the fraction of units whose rotation effect is significant (ANOVA, Bonferroni)
   and Goodfellow's firing-rate score (jackknife intervals around the plain estimate), and NV
   against the number of digits (``tmx.convergence``);
4. the seed package's analysis: the measure beside the accuracy for its seven groups;
5. writes ``demo-output/``: what ``tmx run`` writes (``layers.csv``, ``units.csv``,
   ``accuracy.csv``, ``nv_per_layer.png``, ``nv_units.png``, ``transforms.png``,
   ``accuracy.png``, ``report.zarr``), the demo's own figures (``invariance_per_layer.png``,
   ``anova_per_layer.png``, ``goodfellow_per_layer.png``, ``convergence.png``,
   ``accuracy_vs_nv.png``), ``summary.csv`` (per layer) and ``analysis.csv`` (per group), and
   ``report.html``: the page of ``tmx run`` (invariance, units, accuracy, the data set report)
   with the demo's measures added; prints the table and where everything went.

``summary.csv`` has, per result, the columns ``estimate``, ``low``, ``high``, ``interval`` (how
the interval was made) and, for the bias-corrected results, ``uncorrected``. The NV and NVSE
intervals are jackknife intervals centred on the bias-corrected estimate (so they contain it);
the uncorrected value may lie outside when the correction exceeds the interval's half-width.
The ANOVA fraction and the Goodfellow score get jackknife intervals centred on the plain
estimate (``layer_jackknife``), not bootstrap ones: bootstrap replicates repeat digits, which
raises the F tests' power, so every replicate can lie above the estimate, and then every
quantile interval of the replicates (percentile, bias-corrected or BCa) excludes it.

Run ``python -m tmx.demo --help`` for the options (``--tiny`` runs a seconds-long version).
"""

from __future__ import annotations

import argparse
import csv
import html
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
import xarray as xr
from scipy import stats

from . import _page, cli, datasets, models
from . import introspect as ti
from . import plot as tplot
from . import transforms as T
from ._provenance import provenance
from .analysis import analyze
from .cube import activations
from .measures import (
    anova_invariance,
    bootstrap,
    by_layer,
    convergence,
    goodfellow,
    invert,
    normalized_variance,
)
from .store import open as open_cube

log = logging.getLogger("tmx")


@dataclass(frozen=True)
class Config:
    out: Path = Path("demo-output")
    samples: int | None = None  # test digits used (None: all)
    rotations: int = 16
    shifts: tuple[int, ...] = (-4, -2, 0, 2, 4)
    groups: int = 20  # jackknife groups of digits of the ANOVA fraction and Goodfellow score
    group_n: int = 8  # transformations per seed group
    epochs: int = 8
    size: int = 28
    seed: int = 0


TINY = Config(samples=24, rotations=4, shifts=(-2, 0, 2), groups=8, group_n=2, epochs=1, size=16)

# how each result's interval is made (the summary's ``interval`` column)
JACKKNIFE = "jackknife, centred on the bias-corrected estimate"
PLAIN_JACKKNIFE = "jackknife, centred on the estimate (no bias correction)"


def _step(message: str, start: float) -> None:
    log.info("[%6.1fs] %s", time.perf_counter() - start, message)


def _write_inputs(out: Path, model, x: xr.DataArray) -> tuple[Path, Path, Path]:
    """The model, the digits and their labels as the files ``tmx run`` reads."""
    model_path, data_path, labels_path = out / "model.keras", out / "digits.npy", out / "labels.npy"
    model.save(model_path)
    np.save(data_path, np.asarray(x.values, dtype=np.float32))
    np.save(labels_path, np.asarray(x["label"].values, dtype=np.int64))
    return model_path, data_path, labels_path


def run(config: Config = Config()) -> dict[str, Path]:
    """Run the demo; returns the paths written."""

    tf.get_logger().setLevel("ERROR")  # one tf.function per cube: retracing notes are noise
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = datasets.digits(config.size, seed=config.seed)
    model = models.trained_small_cnn(seed=config.seed, epochs=config.epochs, size=config.size)
    x = data.as_dataarray("test")
    if config.samples is not None:
        x = x.isel(sample=slice(0, config.samples))
    y = x["label"].values
    model_path, data_path, labels_path = _write_inputs(out, model, x)
    _step(
        f"model {model.name} and {x.sizes['sample']} test digits of {config.size}px written", start
    )

    # fill with the standardised background (raw 0), not 0, so corners look like background
    background = float(-data.mean / data.std)
    spec = f"rotation(0:360:{360 / config.rotations:g}, fill_value={background!r})"
    paths = cli.run(
        model_path,
        data_path,
        spec,
        out=out,
        labels=labels_path,
        overwrite=True,
        page=False,
        command=f"tmx run {model_path} {data_path} --transforms '{spec}' --labels {labels_path}",
    )
    store = paths[cli.STORE]
    cube = open_cube(store)
    _step(f"tmx run: cube {dict(cube.sizes)} saved to {store} and reopened", start)

    shifts = T.translation(
        np.repeat(config.shifts, len(config.shifts)),
        np.tile(config.shifts, len(config.shifts)),
        fill_value=background,
    )
    quarter_turns = T.rot90([0, 1, 2, 3])
    shift_cube = activations(model, x, shifts).load()
    turn_cube = activations(model, x, quarter_turns).load()
    inverted = invert(turn_cube)

    # the layer value: Σ TV / Σ SV with the jackknife's bias correction and interval (the
    # default of tmx.bootstrap for the variance family); the unit mean moves with N
    layer_value: dict[str, Any] = {"reduce": "ratio_of_means"}
    results = {
        "NV rotation": bootstrap(normalized_variance, cube, **layer_value),
        "NV translation": bootstrap(normalized_variance, shift_cube, **layer_value),
        "NVSE rot90": bootstrap(normalized_variance, inverted, **layer_value),
        # dead units (SV = 0) have no NV and are left out, as on tmx run's page
        "NV rotation, unit mean": bootstrap(
            normalized_variance, cube, reduce="mean", zero_div="nan"
        ),
    }
    _step("normalized variance and same-equivariance with jackknife intervals", start)
    curve = convergence(normalized_variance, cube, seed=config.seed)
    _step(f"NV against the number of digits: sizes {curve['size'].values.tolist()}", start)
    loaded = cube.load()
    # intervals around the plain estimate: see the module's docstring (why not bootstrap ones)
    results["ANOVA fraction rotation"] = layer_jackknife(
        _anova_reject, loaded, config.groups, bounds=(0.0, 1.0)
    )
    results["Goodfellow rotation"] = layer_jackknife(
        _goodfellow_score, loaded, config.groups, bounds=(0.0, np.inf)
    )
    _step("ANOVA fraction and Goodfellow score with jackknife intervals", start)

    groups = T.seed_groups(config.group_n, size=config.size, fill_value=background)
    analysis = analyze(model, x, y, groups, layers=list(cube.attrs["layers"]), zero_div="nan")
    _step("analysis over the seed package's seven groups", start)

    introspection = _introspect(loaded)
    _step("introspection: PFA, inactive units", start)

    paths.update(_write(out, results, analysis))
    paths["convergence.png"] = _save_convergence(curve, out)
    layers = [n for n in ("pool2", "dense", "logits") if n in cube.attrs["layers"]]
    section = _section(results, analysis, paths, config)
    paths.update(
        cli.report(
            store,
            out=out,
            report_layers=layers,
            seed=config.seed,
            images=x.values,
            sections=[("More measures (the demo)", section)],
            title="tmx demo: a small CNN on the digits under rotations",
        )
    )
    _step("data set report and report.html", start)
    _print_table(results, analysis, paths)
    _print_introspection(introspection, paths["report.zarr"])
    _step("done", start)
    return paths


def _save_convergence(curve, out: Path) -> Path:
    matplotlib.use("Agg")

    fig = tplot.convergence(curve, title="NV under rotations against the number of digits")
    path = out / "convergence.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def layer_jackknife(
    statistic,
    cube: xr.DataArray,
    groups: int,
    ci: float = 0.95,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> xr.Dataset:
    """The per-layer mean of a per-unit statistic with a delete-m jackknife interval around it.

    The N digits are split into G groups of near-equal sizes m_g (a seeded permutation taken
    modulo G, as ``tmx.bootstrap``'s jackknife). With θ̂ the statistic on all digits and θ_(g)
    without group g, h_g = N / m_g and the pseudo-values θ̃_g = h_g θ̂ − (h_g − 1) θ_(g),
    θ_J = G θ̂ − Σ_g (1 − m_g / N) θ_(g) and (Busing, Meijer & van der Leeden 1999)

        SE² = (1 / G) Σ_g (θ̃_g − θ_J)² / (h_g − 1),   interval θ̂ ± t_(G−1, (1+ci)/2) SE,

    clipped to the statistic's range ``bounds`` (a fraction lies in [0, 1]).

    The interval is centred on the **uncorrected** θ̂ (it always contains it): the statistics
    bootstrapped here (a fraction of significant tests, a firing-rate ratio) change with N by
    design, which is not a bias to remove. No digit is repeated (bootstrap replicates repeat
    digits, which raises the F tests' power: every replicate can lie above the estimate, and
    then every quantile interval of the replicates, percentile, BC or BCa, excludes it).

    Returns a Dataset over ``layer``: ``estimate`` (θ̂), ``low``, ``high``, ``se``; attrs
    ``method`` = "jackknife-plain", ``groups``, ``ci``, ``tmx_version``.
    """

    n = cube.sizes["sample"]
    g = int(min(groups, n))
    code = np.random.default_rng(20261206).permutation(n) % g
    sizes = np.bincount(code, minlength=g).astype(np.float64)
    estimate = by_layer(statistic(cube), reduce="mean")
    leave_out = xr.concat(
        [
            by_layer(statistic(cube.isel(sample=np.flatnonzero(code != k))), reduce="mean")
            for k in range(g)
        ],
        dim="jackknife",
        coords="minimal",
        compat="override",
    )
    theta, loo = np.asarray(estimate.values, dtype=np.float64), np.asarray(leave_out.values)
    h = (n / sizes)[:, None]
    pseudo = h * theta[None] - (h - 1) * loo
    theta_j = g * theta - ((1 - sizes / n)[:, None] * loo).sum(axis=0)
    se = np.sqrt(((pseudo - theta_j[None]) ** 2 / (h - 1)).sum(axis=0) / g)
    half = stats.t.ppf((1 + ci) / 2, g - 1) * se
    coords = {"layer": estimate["layer"].values}
    out = xr.Dataset(
        {
            "estimate": ("layer", theta),
            "low": ("layer", np.maximum(theta - half, bounds[0])),
            "high": ("layer", np.minimum(theta + half, bounds[1])),
            "se": ("layer", se),
        },
        coords=coords,
    )
    out.attrs = provenance("method", "jackknife-plain", groups=g, ci=ci)
    return out


def _anova_reject(cube):
    return anova_invariance(cube, alpha=0.01).reject.astype(float).rename("anova_reject")


def _goodfellow_score(cube):
    # the reference is rotation(0), the untransformed digit; the local rate is taken over all
    # cells (local="top", the 2009 paper's, selects a few samples: too discrete to bootstrap)
    return goodfellow(cube, reference=0, local="all")["score"].rename("goodfellow_score")


def _introspect(cube) -> dict:
    """PFA and IUA over every rotated digit."""

    recipe = ti.pfa_recipe(ti.pfa(cube, transformation="stack"), "kl")
    inactive = ti.iua(cube, transformation="stack")
    return {"recipe": recipe, "inactive": inactive}


def _print_introspection(result: dict, report_store: Path) -> None:
    recipe, inactive = result["recipe"], result["inactive"]
    report = ti.open_report(report_store)
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


def _interval_kind(res: xr.Dataset) -> str:
    if res.attrs.get("method") == "jackknife":
        return JACKKNIFE
    if res.attrs.get("method") == "jackknife-plain":
        return f"{PLAIN_JACKKNIFE}, {res.attrs['groups']} groups"
    return str(res.attrs.get("method", ""))


def _summary_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The header and rows of summary.csv (see the module's docstring for the columns)."""
    layers = [str(v) for v in results["NV rotation"].layer.values]
    header = ["layer"]
    for key, res in results.items():
        header += [f"{key} {s}" for s in ("estimate", "low", "high")]
        if "uncorrected" in res:
            header.append(f"{key} uncorrected")
        header.append(f"{key} interval")
    rows = []
    for name in layers:
        row = [name]
        for res in results.values():
            fields = ["estimate", "low", "high", *(["uncorrected"] if "uncorrected" in res else [])]
            if name in res.layer.values:
                sel = res.sel(layer=name)
                row += [f"{float(sel[s]):.6g}" for s in fields]
                row.append(_interval_kind(res))
            else:
                row += [""] * (len(fields) + 1)
        rows.append(row)
    return header, rows


def _write(out, results, analysis) -> dict[str, Path]:
    matplotlib.use("Agg")

    paths: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths[name] = path

    curves = [  # (file, series, title, y label)
        (
            "invariance_per_layer.png",
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
        fig = tplot.layer_curves({k: results[k] for k in keys}, title=title, ylabel=ylabel)
        save(fig, filename)
    save(tplot.accuracy_scatter(analysis), "accuracy_vs_nv.png")

    summary = out / "summary.csv"
    header, rows = _summary_rows(results)
    with summary.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    paths["summary.csv"] = summary
    table = out / "analysis.csv"
    analysis.drop_vars("excluded").to_dataframe().to_csv(table)
    paths["analysis.csv"] = table
    return paths


def _section(results, analysis, paths, config) -> str:
    """The demo's section of report.html: its summary table, figures and the seed groups."""

    header, rows = _summary_rows(results)
    keep = [i for i, h in enumerate(header) if not h.endswith(" interval")]
    frame = pd.DataFrame([[r[i] for i in keep] for r in rows], columns=[header[i] for i in keep])
    kinds = "".join(
        f"<li>{html.escape(k)}: {html.escape(_interval_kind(r))}</li>" for k, r in results.items()
    )
    groups = analysis[["overall", "accuracy"]].to_dataframe().reset_index()
    figures = [
        (
            "invariance_per_layer.png",
            "NV under rotations and translations, NVSE under quarter turns",
        ),
        ("anova_per_layer.png", "Units with a significant rotation effect"),
        ("goodfellow_per_layer.png", "Goodfellow's invariance score"),
        ("convergence.png", "NV under rotations against the number of digits"),
        ("accuracy_vs_nv.png", "The seed package's groups: NV against accuracy"),
    ]
    return (
        "<p>Per layer, 95 % intervals over digits (<code>summary.csv</code>). The intervals:</p>"
        f"<ul>{kinds}</ul>"
        "<p class='note'>A jackknife interval is centred on the bias-corrected estimate; the "
        "uncorrected value is beside it and may lie outside. The ANOVA fraction and the "
        "Goodfellow score get a jackknife interval centred on the plain estimate, which always "
        "contains it: bootstrap replicates repeat digits, which raises the F tests' power, so "
        "every replicate can lie above the estimate, and then every quantile interval of the "
        "replicates (percentile, bias-corrected or BCa) excludes it. Their change with the "
        "number of digits is part of what they are, not a bias to correct.</p>"
        + _page._table(frame)
        + "".join(_page._figure(paths.get(name), caption) for name, caption in figures)
        + f"<h3>The seed package's seven groups ({config.group_n} transformations each)</h3>"
        + _page._table(groups)
    )


def _print_table(results, analysis, paths) -> None:
    layers = [str(v) for v in results["NV rotation"].layer.values]
    keys = list(results)
    width = max(len(n) for n in layers) + 2
    print()
    print(
        "per layer: estimate [95% CI over digits]. NV, NVSE: the layer's Σ TV / Σ SV, jackknife "
        "bias-corrected, with its jackknife CI (centred on it);\n'unit mean': the plain mean of "
        "the unit NVs (it moves with the number of digits). ANOVA, Goodfellow: jackknife CI "
        "centred on the plain estimate"
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
    with cli.logging_to_stderr():
        run(Config(**{**config.__dict__, "out": Path(args.out)}))


if __name__ == "__main__":
    main()
