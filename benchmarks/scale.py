"""A real CNN at scale: MobileNetV2's activation cube, memory and time against ``predict``.

Run: .venv/bin/python -m benchmarks.scale [--small 16] [--large 1000] [--t 8] [--size 96]
     [--memory 2GB] [--skip-large]

``keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None)`` (random weights, no
download), T = 8 rotations (0°, 45°, …, 315°), random inputs. Two cases:

1. every layer (``layers=None``, 4.0 M units per image at 96 px), ``--small`` images;
2. ``--large`` images with fewer layers: the outputs of the residual blocks (``block_*_add``),
   ``out_relu``, the pooling and the predictions (about 50 k units per image).

Each case runs in fresh Python processes (one per measurement, like ``benchmarks.memory``):

- tmx: ``tmx.normalized_variance(tmx.activations(model, x, rotations, layers=...)).compute()``
  with the default plan (``memory=None``: 2 GiB or a quarter of the RAM); reported: wall time,
  peak resident set (``ru_maxrss`` of the process, TensorFlow and the model included), the
  resident set before the compute, the planned batch and chunks, and the images the forward
  passes actually ran against the N × T needed (padding included);
- baseline: ``predict`` of the exposed model (the same recorded layers) over the same
  transformed inputs (rotated beforehand, so the baseline does not pay for the rotations),
  default ``batch_size`` (32); and ``model.predict`` (the final output only) for reference.

Ratio = tmx wall / the exposed model's ``predict`` wall (target ≤ 2); both are cold (each
process traces its own functions).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GIB = 2**30


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(n: int, t: int, size: int):
    import keras
    import numpy as np

    from tmx import transforms as T

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None)
    x = np.random.default_rng(0).random((n, size, size, 3), dtype=np.float32)
    return model, x, T.rotation(np.arange(t) * (360.0 / t))


def _layers(model, which: str):
    if which == "all":
        return None
    names = [layer.name for layer in model.layers if layer.name.endswith("_add")]
    return [*names, "out_relu", "global_average_pooling2d", "predictions"]


def child(mode: str, n: int, t: int, size: int, which: str, memory: str | None) -> None:
    import numpy as np

    import tmx
    from tmx import transforms as T
    from tmx.cube import forward_runner

    model, x, tset = _setup(n, t, size)
    layers = _layers(model, which)
    result: dict = {"mode": mode, "n": n, "t": t, "layers": which}
    if mode == "tmx":
        before = _rss()
        cube = tmx.activations(model, x, tset, layers=layers, memory=memory)
        start = time.perf_counter()
        nv = tmx.normalized_variance(cube).compute()
        result["wall_s"] = time.perf_counter() - start
        runner = forward_runner(cube)
        result.update(
            units=int(cube.sizes["unit"]),
            cube_gb=cube.size * 4 / 1e9,
            chunks=[int(c) for c in cube.data.chunksize],
            batch_size=int(runner.batch_size),
            images_run=int(runner.images),
            images_needed=n * t,
            finite=float(np.isfinite(nv.values).mean()),
            rss_before=before,
        )
    else:
        xt = T.apply_many(tset, x).reshape(n * t, size, size, 3)  # (N, T, ...) → N·T images
        if mode == "predict":
            target = model
        else:  # the recorded layers, as the cube exposes them
            every = tmx.inspect.default_endpoints(model)
            target = tmx.inspect.expose(model, every if layers is None else layers)
        start = time.perf_counter()
        out = target.predict(xt, verbose=0)
        result["wall_s"] = time.perf_counter() - start
        del out
    result["peak"] = _peak()
    print("RESULT " + json.dumps(result), flush=True)


def run_child(*args: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def case(n: int, t: int, size: int, which: str, memory: str | None) -> None:
    common = [str(n), str(t), str(size), which, memory or ""]
    ours = run_child("tmx", *common)
    exposed = run_child("predict_exposed", *common)
    plain = run_child("predict", *common)
    label = "every layer" if which == "all" else "block outputs + head"
    print(
        f"\nMobileNetV2 {size}x{size}, {label}: {ours['units']:,} units/image, N={n}, T={t}, "
        f"cube {ours['cube_gb']:.2f} GB float32 (never materialised)"
    )
    print(
        f"  plan: batch {ours['batch_size']} images, chunks (sample, transformation, unit) = "
        f"{tuple(ours['chunks'])}"
    )
    print(
        f"  images run {ours['images_run']:,} for {ours['images_needed']:,} needed "
        f"({ours['images_run'] / ours['images_needed']:.2f}x)"
    )
    print(f"  {'what':44s} {'seconds':>8s} {'peak GB':>8s} {'ratio':>6s}")
    rows = [
        ("tmx normalized_variance(activations(...))", ours),
        ("predict of the exposed model (same layers)", exposed),
        ("model.predict (final output only)", plain),
    ]
    for name, r in rows:
        print(
            f"  {name:44s} {r['wall_s']:8.1f} {r['peak'] / 1e9:8.2f} "
            f"{r['wall_s'] / exposed['wall_s']:6.2f}"
        )
    print(
        f"  tmx peak {ours['peak'] / 1e9:.2f} GB ({ours['rss_before'] / 1e9:.2f} GB before the "
        f"compute: Python, TensorFlow, the model); finite NV: {ours['finite']:.3f}"
    )
    print(
        f"  time ratio to the exposed model's predict: {ours['wall_s'] / exposed['wall_s']:.2f} "
        "(target <= 2); peak target <= 4 GB"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, n, t, size, which, memory = sys.argv[2:8]
        child(mode, int(n), int(t), int(size), which, memory or None)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=16, help="images, every layer")
    parser.add_argument("--large", type=int, default=1000, help="images, fewer layers")
    parser.add_argument("--t", type=int, default=8, help="rotations")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--memory", default=None, help="tmx's budget (default: its own)")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    case(args.small, args.t, args.size, "all", args.memory)
    if not args.skip_large:
        case(args.large, args.t, args.size, "blocks", args.memory)


if __name__ == "__main__":
    main()
