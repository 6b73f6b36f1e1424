"""Do layer values stay put as N grows, and do their 95 % intervals cover? (issues 15.7 and 22)

Run: .venv/bin/python -m benchmarks.coverage [--sets 20] [--n 100] [--big 2000] [--boot 200]
     [--figure PATH]

The case of the issue: ``tmx.models.small_cnn((16, 16, 1))`` with random weights, smoothed-noise
16×16 images (a fresh data set per draw), 8 rotations. One data set of ``--big`` images gives
the large-N layer values (the "truth"); ``--sets`` independent data sets of ``--n`` images give
the small-N estimates. Printed per layer, for each layer summary:

- bias: (mean of the small-N estimates − the large-N value) / their SD across data sets;
- coverage of the 95 % interval: the fraction of data sets whose interval holds the large-N
  value (the target: ≥ 0.90);
- width: the mean interval width over the 95 % range of the estimates across data sets
  (the target: within 2×, i.e. between 0.5 and 2).

Summaries: the unit mean of NV (the peers' layer value), the plain ratio of means Σ TV / Σ SV,
and the jackknifed ratio of means (``bias_correction="jackknife"``); intervals: the default
(``tmx.bootstrap(normalized_variance, cube, reduce=...)``: the studentised jackknife) and the
former default (``method="bc", over="sample"``, multinomial resampling). With ``--figure`` the
convergence curve of one large data set (``tmx.convergence``) is drawn as well.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def images(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    """Smoothed noise in [0, 1] like pixel intensities: a 5-tap box blur of white noise,
    scaled to mean 0.5 and SD 0.2 and clipped, (n, size, size, 1). Non-negative inputs leave
    the ReLU units whose kernel sums below 0 silent on most images: sparse units."""
    from scipy.ndimage import uniform_filter

    x = uniform_filter(rng.normal(size=(n, size, size)), size=(1, 5, 5), mode="wrap")
    x = np.clip(0.5 + 0.2 * (x - x.mean()) / x.std(), 0.0, 1.0)
    return x[..., None].astype(np.float32)


def layer_values(cube, boot: int) -> dict[str, dict]:
    """The layer summaries and intervals of one data set, as numpy arrays per key."""
    import tmx

    nv = tmx.normalized_variance(cube)
    default = tmx.bootstrap(tmx.normalized_variance, cube, reduce="ratio_of_means")
    unit_mean_ci = tmx.bootstrap(tmx.normalized_variance, cube, reduce="mean")
    old = tmx.bootstrap(
        tmx.normalized_variance, cube, n=boot, over="sample", method="bc", reduce="mean"
    )
    old_ratio = tmx.bootstrap(
        tmx.normalized_variance, cube, n=boot, over="sample", method="bc", reduce="ratio_of_means"
    )
    plain = tmx.by_layer(tmx.normalized_variance(cube, parts=True), reduce="ratio_of_means")

    def interval(ds):
        return {"estimate": ds.estimate.values, "low": ds.low.values, "high": ds.high.values}

    return {
        "unit mean": {"estimate": tmx.by_layer(nv).values},
        "ratio of means": {"estimate": plain.values},
        "ratio of means, jackknifed": interval(default),
        "unit mean, jackknifed": interval(unit_mean_ci),
        "unit mean, old bc bootstrap": interval(old),
        "ratio of means, old bc bootstrap": interval(old_ratio),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args(argv)

    import tmx
    from tmx import transforms as T

    model = tmx.models.small_cnn((16, 16, 1))
    rotations = T.rotation(np.linspace(0, 315, 8))
    rng = np.random.default_rng(0)
    layers = None
    start = time.perf_counter()
    big = tmx.activations(model, images(rng, args.big), rotations).load()
    truth = {
        "unit mean": tmx.by_layer(tmx.normalized_variance(big)).values,
        "ratio of means": tmx.by_layer(
            tmx.normalized_variance(big, parts=True), reduce="ratio_of_means"
        ).values,
    }
    layers = [str(v) for v in tmx.by_layer(tmx.normalized_variance(big)).layer.values]
    inactive = tmx.by_layer(tmx.normalized_variance(big))["inactive"].values
    print(f"large data set: N = {args.big} in {time.perf_counter() - start:.1f} s")
    print("never-active units at large N:", dict(zip(layers, inactive.tolist(), strict=True)))
    draws = []
    for k in range(args.sets):
        cube = tmx.activations(model, images(rng, args.n), rotations).load()
        draws.append(layer_values(cube, args.boot))
        print(f"  data set {k + 1}/{args.sets}", end="\r", flush=True)
    print(f"{args.sets} data sets of N = {args.n} in {time.perf_counter() - start:.1f} s")

    print()
    header = f"{'summary':36s} {'layer':8s} {'large N':>9s} {'bias/SD':>8s} {'coverage':>9s}"
    print(header + f" {'width/range':>12s}")
    for key in draws[0]:
        target = truth["unit mean" if key.startswith("unit mean") else "ratio of means"]
        est = np.array([d[key]["estimate"] for d in draws])
        sd = est.std(axis=0, ddof=1)
        spread = np.subtract(*np.quantile(est, [0.975, 0.025], axis=0))
        for i, name in enumerate(layers):
            bias = (est[:, i].mean() - target[i]) / sd[i] if sd[i] > 0 else 0.0
            line = f"{key:36s} {name:8s} {target[i]:9.4f} {bias:8.2f}"
            if "low" in draws[0][key]:
                low = np.array([d[key]["low"][i] for d in draws])
                high = np.array([d[key]["high"][i] for d in draws])
                cover = np.mean((low <= target[i]) & (target[i] <= high))
                width = np.mean(high - low) / spread[i] if spread[i] > 0 else float("nan")
                line += f" {cover:9.2f} {width:12.2f}"
            print(line)
        print()
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import tmx.plot

        sizes = [s for s in (25, 50, 100, 200, 400, 800, 1600, args.big) if s <= args.big]
        curve = tmx.convergence(tmx.normalized_variance, big, sizes=sorted(set(sizes)))
        fig = tmx.plot.convergence(curve, title="NV (Σ TV / Σ SV, jackknifed) against N")
        fig.savefig(args.figure, dpi=110, bbox_inches="tight")
        print(f"convergence figure: {args.figure}")
        for i, name in enumerate(layers):
            row = curve.isel(layer=i)
            cells = "  ".join(
                f"N={int(s)}: {e:.3f} ±{w / 2:.3f}"
                for s, e, w in zip(
                    row["size"].values, row.estimate.values, row.width.values, strict=True
                )
            )
            print(f"  {name:8s} {cells}")


if __name__ == "__main__":
    main()
