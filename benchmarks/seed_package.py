"""tmx against the seed package, ``transformational-measures-tf`` 0.72a0: speed and equal values.

Run: .venv/bin/python -m benchmarks.seed_package [--n 2000] [--n-seed 512] [--n-se 128]
         [--t 16] [--repeats 3] [--seed-repeats 1] [--threads 0] [--seed-block 64 64] [--nse]
     .venv/bin/python -m benchmarks.seed_package --setup   # once: create the seed's venv

The seed needs TensorFlow with Keras 2 as ``tf.keras`` (it reads ``layer.output.name`` up to a
'/'), i.e. TensorFlow <= 2.15, which cannot share tmx's venv (Keras 3). ``--setup`` creates
``benchmarks/.venv-tmeasures`` (keep it out of git) with the python running this script:

    python -m venv benchmarks/.venv-tmeasures
    benchmarks/.venv-tmeasures/bin/pip install "tensorflow-cpu==2.15.*" "numpy<2" \
        transformational-measures-tf==0.72a0

(tested: Python 3.11, tensorflow-cpu 2.15.1, Keras 2.15.0, numpy 1.26.4, scipy 1.17.1). The seed's
side runs in that venv as a subprocess, ``benchmarks/_tmeasures_runner.py``, after tmx's side
(never both at once). Without the venv only tmx's side is printed.

Same model, same inputs, so that only the computation differs:
- Model: ``tmx.models.small_cnn((28, 28, 1), seed=0)`` (untrained; conv1, pool1, conv2, pool2,
  flatten, dense, logits; 12,586 units). The runner rebuilds the architecture in tf.keras 2.15
  and loads the same weights; the table's first line is the largest difference between the two
  models' outputs on 64 images, over all seven layers.
- Inputs: N samples, the 1,797 scikit-learn digits (``tmx.datasets.digits(28)``, train then
  test) repeated cyclically up to N, plus Gaussian noise (σ = 0.05, seeded) so no two coincide.
  They are transformed once by tmx (``tmx.transforms.apply_many``) into an (N, T, 28, 28, 1)
  array that both libraries read. The seed reads it through a custom ``TransformationsDataSet``
  (the runner's ``PreTransformed``); tmx through ``tmx.activations`` on the flattened (N·T)
  images without transformations, reshaped to (N, T, units) with the sample blocks of the cube
  ``tmx.activations(model, x, tset)`` would use and its coordinates (so ``tmx.invert`` knows the
  set); this cube equals the latter, which is checked. Both time the forward passes: neither
  library is given activations.
- NV: T = 16 rotations by 22.5° steps (``tmx.transforms.rotation``, bilinear, zero fill). Seed:
  ``NormalizedVariance.compute`` (two passes over the data: TV, then SV after transposing its data
  set in place). tmx: ``normalized_variance(cube, dispersion="var", zero_div="nan", parts=True)``
  (one pass) and ``by_layer(parts, reduce="ratio_of_means")``, the seed's layer value
  mean_u TV / mean_u SV; ``ddof=1`` on both sides (the seed's Welford divides by count − 1).
- SameEquivariance: the four quarter turns (``tmx.transforms.rot90((0, 1, 2, 3))``), the one set
  where both inverses are exact index operations. Seed: ``SameEquivariance.compute`` (one pass: the
  TV of the inverse-transformed activations, per feature, averaged per layer; layers without
  spatial axes are not reported). tmx: ``transformation_variance(invert(cube, tset),
  dispersion="var")``, averaged per layer (``by_layer``). The seed calls its data set's
  ``apply_inverse_transformation`` once per (sample, transformation, layer, feature map); the
  custom data set answers with ``np.rot90(map, -k)``. The seed's own inverse,
  ``AffineTransformation.apply_inverse``, is not used: under Keras 2.15 it does not undo a quarter
  turn at all (Keras 2.15's ``keras.preprocessing.image.apply_affine_transform`` defaults to
  ``row_axis=1, col_axis=2, channel_axis=0``, so an (h, w, 1) map is treated as h channels of
  w × 1 images; older ``keras_preprocessing`` releases defaulted to channels-last), and it negates
  the zoom (zx = zy = −1, an extra 180° turn, even the identity's inverse is a flip) whatever the
  Keras version. The runner measures this on a
  14 × 14 map and the benchmark prints it. ``--nse`` adds the seed's NormalizedSameEquivariance
  (twice the seed's time) against ``normalized_variance(invert(cube), dispersion="var",
  zero_div="nan", pool="mean")``, averaged per layer: its layer value is a mean of per-feature
  ratios.

Sizes: the seed is slow (about 0.13 s per sample for NV at T = 16 and 0.4 s per sample for
SameEquivariance at T = 4, essentially on one core: eager TensorFlow ops in a Python loop over
cells, layers and feature maps), so both libraries are compared on the same, smaller N:
``--n-seed`` (default 512) for NV and ``--n-se`` (default 128) for the equivariance measures;
the whole run then takes about 4 minutes on 2 cores. tmx alone is also timed at ``--n``
(default 2000), printed beside the seed's time extrapolated linearly in N (its cost is a loop
over the N·T cells), marked as extrapolated. ``--n-seed 2000 --n-se 2000`` compares at N = 2000
on both sides (about 20 minutes).

Timing: medians of ``--repeats`` (tmx, after one warm-up run that traces its tf.function) and
of ``--seed-repeats`` (seed, default 1: a run takes minutes; Keras' predict function is warmed
up first). Each timed call starts from the model and the input array and ends with numbers in
memory: forward passes, inverse transformations and reductions. The seed's ``compute(height,
width)`` reads blocks of height × width cells (``--seed-block``, default 64 × 64: its TV pass
predicts 64 samples × all T per call, its SV pass all T × 64 samples); its per-cell Python loop,
not the block size, dominates. tmx uses ``batch_size=256`` and its default chunks.

Threads: ``--threads 0`` (default) keeps both libraries' defaults (TensorFlow's thread pools;
dask's threaded scheduler for tmx); ``--threads k`` sets TensorFlow's intra- and inter-op pools to
k on both sides and dask's workers to k.

Printed: the timing table (measure | tmx median s | seed median s | seed / tmx), then per layer
the values of both and their absolute and relative differences, and per unit the largest
differences (NaN where 0/0, on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dask
import keras
import numpy as np
import xarray as xr

import tmx
from tmx import transforms as T

from ._timing import median_seconds

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-tmeasures"
PYTHON = VENV / "bin" / "python"
RUNNER = HERE / "_tmeasures_runner.py"
LAYERS = ("conv1", "pool1", "conv2", "pool2", "flatten", "dense", "logits")
SPATIAL = ("conv1", "pool1", "conv2", "pool2")
BATCH = 256
SEED_PACKAGE = "transformational-measures-tf==0.72a0"


def setup() -> None:
    cmds = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "tensorflow-cpu==2.15.*", "numpy<2", SEED_PACKAGE],
    ]
    for cmd in cmds:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    print(f"seed venv ready: {VENV} (keep it out of git)")


def seed_available() -> bool:
    if not PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(PYTHON), "-c", "import transformational_measures_tf"],
        capture_output=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return probe.returncode == 0


def samples(n: int) -> np.ndarray:
    d = tmx.datasets.digits(28)
    base = np.concatenate([d.x_train, d.x_test])
    x = base[np.arange(n) % len(base)]
    noise = np.random.default_rng(0).normal(0.0, 0.05, size=x.shape)
    return (x + noise).astype(np.float32)


def pretransformed_cube(
    model: keras.Model, x: np.ndarray, pre: np.ndarray, tset: T.TransformationSet
) -> tuple[xr.DataArray, xr.DataArray]:
    """The cube of the pre-transformed (N, T, ...) inputs, and the cube tmx builds from x."""
    n, t = pre.shape[:2]
    ref = tmx.activations(model, x, tset, layers=list(LAYERS), batch_size=BATCH)
    s_block = ref.data.chunks[0][0]
    flat = tmx.activations(
        model,
        pre.reshape(n * t, *pre.shape[2:]),
        None,
        layers=list(LAYERS),
        batch_size=BATCH,
        chunks={"sample": s_block * t},
    )
    data = flat.data.reshape(n, t, flat.sizes["unit"])
    assert data.chunks[0] == ref.data.chunks[0], (data.chunks, ref.data.chunks)
    cube = xr.DataArray(data, dims=ref.dims, coords=ref.coords, name=ref.name, attrs=ref.attrs)
    return cube, ref


def tmx_nv(cube: xr.DataArray) -> tuple[xr.Dataset, xr.DataArray]:
    parts = tmx.normalized_variance(cube, dispersion="var", zero_div="nan", parts=True).compute()
    return parts, tmx.by_layer(parts, reduce="ratio_of_means")


def tmx_se(cube: xr.DataArray, tset: T.TransformationSet) -> tuple[xr.DataArray, xr.DataArray]:
    tv = tmx.transformation_variance(tmx.invert(cube, tset), dispersion="var").compute()
    return tv, tmx.by_layer(tv)


def tmx_nse(cube: xr.DataArray, tset: T.TransformationSet) -> xr.DataArray:
    nv = tmx.normalized_variance(
        tmx.invert(cube, tset), dispersion="var", zero_div="nan", pool="mean"
    ).compute()
    return tmx.by_layer(nv, finite_only=False)


def run_seed(path_in: str, path_out: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(PYTHON), str(RUNNER), path_in, path_out], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the seed runner failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int, int]:
    """(max abs diff, max rel diff over finite pairs, NaN/inf mismatches, finite pairs)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    same_nonfinite = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    mismatches = int((~both & ~same_nonfinite).sum())
    if not both.any():
        return float("nan"), float("nan"), mismatches, 0
    diff = np.abs(a[both] - b[both])
    scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
    rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    return float(diff.max()), float(rel.max()), mismatches, int(both.sum())


def print_layers(title: str, names, tmx_vals, seed_vals) -> None:
    print(f"\n{title}")
    print(f"{'layer':8s} {'tmx':>14s} {'seed':>14s} {'abs diff':>10s} {'rel diff':>10s}")
    for name, a, b in zip(names, tmx_vals, seed_vals, strict=True):
        d, r, _, _ = compare(np.array([a]), np.array([b]))
        print(f"{name:8s} {a:14.8g} {b:14.8g} {d:10.2e} {r:10.2e}")


def print_units(title: str, names, tmx_units: dict, seed_units: dict) -> None:
    print(f"\n{title}")
    print(
        f"{'layer':8s} {'units':>6s} {'nonfinite (both)':>16s} {'mismatch':>8s} "
        f"{'max abs':>10s} {'max rel':>10s}"
    )
    for name in names:
        a, b = tmx_units[name], seed_units[name]
        d, r, bad, _ = compare(a, b)
        nonfinite = int((~np.isfinite(a) & ~np.isfinite(b)).sum())
        print(f"{name:8s} {len(a):6d} {nonfinite:16d} {bad:8d} {d:10.2e} {r:10.2e}")


def time_tmx(x: np.ndarray, n: int, n_se: int, t: int, repeats: int, nse: bool) -> dict:
    """tmx's timings and values at N = n (NV) and n_se (the equivariance measures)."""
    model = tmx.models.small_cnn((28, 28, 1), seed=0)
    nv_set, se_set = T.rotation(np.arange(t) * (360.0 / t)), T.rot90((0, 1, 2, 3))
    out: dict = {"model": model, "nv_set": nv_set, "se_set": se_set}
    out["nv_pre"] = T.apply_many(nv_set, x[:n])
    out["se_pre"] = T.apply_many(se_set, x[:n_se])
    rotated = np.stack([np.rot90(x[:n_se], k, axes=(1, 2)) for k in range(4)], 1)
    assert np.array_equal(out["se_pre"], rotated), "tmx rot90(k) is np.rot90(x, k) on (y, x)"
    nv_cube, nv_ref = pretransformed_cube(model, x[:n], out["nv_pre"], nv_set)
    se_cube, se_ref = pretransformed_cube(model, x[:n_se], out["se_pre"], se_set)
    m = min(32, n, n_se)
    out["same_cube"] = max(
        float(np.abs(nv_cube[:m].values - nv_ref[:m].values).max()),
        float(np.abs(se_cube[:m].values - se_ref[:m].values).max()),
    )
    sec = {
        "nv": median_seconds(lambda: tmx_nv(nv_cube), repeats),
        "se": median_seconds(lambda: tmx_se(se_cube, se_set), repeats),
    }
    out["nv_parts"], out["nv_layers"] = tmx_nv(nv_cube)
    out["se_units"], out["se_layers"] = tmx_se(se_cube, se_set)
    if nse:
        sec["nse"] = median_seconds(lambda: tmx_nse(se_cube, se_set), repeats)
        out["nse_layers"] = tmx_nse(se_cube, se_set)
    out["sec"] = sec
    out["units"] = nv_cube.sizes["unit"]
    return out


def seed_side(x: np.ndarray, side: dict, args: argparse.Namespace) -> tuple[dict, float, float]:
    """Run the seed's runner on the same model and inputs; (results, wall s, model diff)."""
    model = side["model"]
    check_x = x[:64]
    exposed = keras.Model(model.input, [model.get_layer(k).output for k in LAYERS])
    check = exposed.predict(check_x, batch_size=64, verbose=0)
    cfg = {
        "input_shape": [28, 28, 1],
        "n_classes": 10,
        "threads": args.threads,
        "block": list(args.seed_block),
        "repeats": args.seed_repeats,
        "n_nv": args.n_seed,
        "n_se": args.n_se,
        "nse": bool(args.nse),
    }
    arrays = {
        "config": np.array(json.dumps(cfg)),
        "check_x": check_x,
        "nv_pre": side["nv_pre"],
        "se_pre": side["se_pre"],
        "se_quarter_turns": np.arange(4),
    }
    for name in LAYERS:
        for k, w in enumerate(model.get_layer(name).get_weights()):
            arrays[f"w/{name}/{k}"] = np.asarray(w)
    tmp = tempfile.mkdtemp(prefix="tmx-bench-seed-")
    try:
        path_in, path_out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(path_in, **arrays)
        wall = run_seed(path_in, path_out)
        with np.load(path_out, allow_pickle=False) as f:
            seed = {k: f[k] for k in f.files}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model_diff = max(
        float(np.abs(np.asarray(c) - seed[f"check/{k}"]).max())
        for c, k in zip(check, LAYERS, strict=True)
    )
    return seed, wall, model_diff


def report_values(side: dict, seed: dict, nse: bool) -> None:
    nv_layers, parts = side["nv_layers"], side["nv_parts"]
    print_layers(
        "NV per layer: tmx by_layer(normalized_variance(cube, dispersion='var', zero_div='nan', "
        "parts=True), reduce='ratio_of_means') vs seed NormalizedVariance.variance_layers",
        list(nv_layers["layer"].values),
        nv_layers.values,
        seed["nv/layers"],
    )
    layer_of = np.asarray(parts["layer"].values).astype(str)
    print_units(
        "NV per unit (TV/SV; nonfinite = 0/0 -> NaN on both sides)",
        LAYERS,
        {k: parts["nv"].values[layer_of == k] for k in LAYERS},
        {k: seed[f"nv/units/{k}"] for k in LAYERS},
    )
    se_layers, se_units = side["se_layers"], side["se_units"]
    print_layers(
        "SameEquivariance per layer: tmx by_layer(transformation_variance(invert(cube, rot90 "
        "set), dispersion='var')) vs seed SameEquivariance (mean of variance_layers_features)",
        list(se_layers["layer"].values),
        se_layers.values,
        seed["se/layers"],
    )
    se_layer_of = np.asarray(se_units["layer"].values).astype(str)
    print_units(
        "SameEquivariance per unit (TV of the inverse-transformed activations)",
        SPATIAL,
        {k: se_units.values[se_layer_of == k] for k in SPATIAL},
        {k: seed[f"se/units/{k}"] for k in SPATIAL},
    )
    if nse:
        nse_layers = side["nse_layers"]
        print_layers(
            "NormalizedSameEquivariance per layer: tmx by_layer(normalized_variance(invert(cube), "
            "dispersion='var', zero_div='nan', pool='mean'), finite_only=False) vs seed "
            "NormalizedSameEquivariance.variance_layers",
            list(nse_layers["layer"].values),
            nse_layers.values,
            seed["nse/layers"],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="create the seed's venv and exit")
    parser.add_argument("--n", type=int, default=2000, help="samples for tmx's own rows")
    parser.add_argument("--n-seed", type=int, default=512, help="samples for NV, both sides")
    parser.add_argument("--n-se", type=int, default=128, help="samples for SE, both sides")
    parser.add_argument("--t", type=int, default=16, help="rotations for NV")
    parser.add_argument("--repeats", type=int, default=3, help="tmx repeats")
    parser.add_argument("--seed-repeats", type=int, default=1, help="seed repeats")
    parser.add_argument("--threads", type=int, default=0, help="0: the libraries' defaults")
    parser.add_argument("--seed-block", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--nse", action="store_true", help="also NormalizedSameEquivariance")
    parser.add_argument("--no-seed", action="store_true", help="tmx only")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    wall = time.perf_counter()
    if args.threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        dask.config.set(scheduler="threads", num_workers=args.threads)
    x = samples(max(args.n, args.n_seed, args.n_se))
    side = time_tmx(x, args.n_seed, args.n_se, args.t, args.repeats, args.nse)
    full = None
    if args.n != args.n_seed or args.n != args.n_se:
        full = time_tmx(x, args.n, args.n, args.t, args.repeats, False)

    seed = None
    if args.no_seed or not seed_available():
        if not args.no_seed:
            print(f"(no seed venv at {VENV}: run with --setup; printing tmx only)")
    else:
        seed, seed_wall, model_diff = seed_side(x, side, args)

    threads = "the libraries' defaults" if args.threads == 0 else str(args.threads)
    print(
        f"small CNN 28x28 (tmx.models.small_cnn, seed=0, untrained), {side['units']} units in "
        f"7 layers; NV: T={args.t} rotations; SE: T=4 quarter turns; threads: {threads}"
    )
    print(
        "pre-fed cube vs tmx.activations(model, x, tset), first 32 samples: max abs diff "
        f"{side['same_cube']:.2e}"
    )
    if seed is not None:
        versions = json.loads(str(seed["versions"]))
        print("seed venv: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        print(
            f"models (Keras 3 vs tf.keras 2.15), 64 images, all layers: max abs diff "
            f"{model_diff:.2e}"
        )
        inv = ", ".join(f"{d:.2f}" for d in seed["inverse_check"])
        print(
            "seed's own AffineTransformation(theta=90k).apply_inverse vs exact rot90(-k), 14x14 "
            f"N(0,1) map, k=0..3: max abs diff {inv} (so not used)"
        )
    times = json.loads(str(seed["times"])) if seed is not None else {}
    print(
        f"\n{'measure':28s} {'N':>5s} {'T':>3s} {'tmx median s':>12s} {'seed median s':>13s} "
        f"{'seed / tmx':>10s}   (tmx: median of {args.repeats}; seed: of {args.seed_repeats})"
    )
    rows = [
        ("NormalizedVariance", "nv", args.n_seed, args.t),
        ("SameEquivariance", "se", args.n_se, 4),
    ]
    if args.nse:
        rows.append(("NormalizedSameEquivariance", "nse", args.n_se, 4))
    for label, key, n, t in rows:
        tsec = side["sec"][key]
        if key in times:
            s = float(np.median(times[key]))
            print(f"{label:28s} {n:5d} {t:3d} {tsec:12.3f} {s:13.3f} {s / tsec:10.1f}")
        else:
            print(f"{label:28s} {n:5d} {t:3d} {tsec:12.3f} {'-':>13s} {'-':>10s}")
    if full is not None:
        for label, key, n, t in rows[:2]:
            tsec = full["sec"][key]
            line = f"{label:28s} {args.n:5d} {t:3d} {tsec:12.3f} {'-':>13s} {'-':>10s}"
            if key in times:
                est = float(np.median(times[key])) * args.n / n
                line += f"   seed extrapolated linearly: ~{est:.0f} s, ~{est / tsec:.0f}x"
            print(line)
    if seed is not None:
        report_values(side, seed, args.nse)
        print(f"\nseed subprocess wall time {seed_wall:.1f} s")
    print(f"benchmark wall time {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
