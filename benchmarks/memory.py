"""Peak memory of the end-to-end measure against N, and a measure on a store bigger than a cap.

Run: .venv/bin/python -m benchmarks.memory [--sizes 1000,4000,16000] [--cap-gib 1.5]
     [--store PATH] [--keep-store] [--store-ratio 3.2]

A small CNN on 28×28 inputs (``benchmarks.cube.small_cnn``, 12 586 units over every layer),
T = 16 rotations, default chunks (all transformations and units, 80 samples a block: 64 MiB).

1. End to end, one fresh Python process per N: ``tmx.normalized_variance(tmx.activations(model,
   x, rotations)).compute()`` with dask's default threaded scheduler (one thread per core). The
   inputs ``x`` are a seeded lazy ``dask.array.random`` array, generated block by block, so
   they do not grow with N either (a numpy ``x`` would add N × 3 KiB to the resident set). The
   cube (N × 805 KB) is never materialised. Per N: wall time of the compute, the process's
   resident set after imports and the model build ("baseline"), its peak resident set
   (``ru_maxrss`` of the whole process, imports included), and the peak over the one at the
   smallest N. Criterion: peak(N) ≤ 1.15 × peak(smallest N). The forward passes are also
   counted, to check that each ran once (TV and SV share them).
2. Out of core: a cube of at least ``--store-ratio`` × the cap (uncompressed float32 bytes) is
   saved to Zarr with ``tmx.save`` (in a fresh process; its peak resident set is reported), or
   reused when ``--store`` names a complete store already. Then ``tmx.normalized_variance(
   tmx.open(store))`` is computed
   a. with the local threaded scheduler in a fresh process (the reference), and
   b. on a ``dask.distributed.LocalCluster`` with one worker process (2 threads) whose
      ``memory_limit`` is the cap: the nanny kills the worker when its resident set exceeds
      95 % of the cap, the worker stops taking tasks at 80 %, spilling to disk is off, and the
      scheduler allows no failed task, so exceeding the cap fails the run. The cap covers the
      worker process's whole resident set: the Python interpreter, distributed, and
      TensorFlow (``import tmx`` imports it; the worker's resident set before and after that
      import is reported), plus the chunks being read and their float64 moments.
   The two results must be equal. The worker's peak is its ``ru_maxrss`` (exact), and the
   largest resident set seen by polling it every 50 ms.

Reading the peaks: within one run the resident set plateaus after the first blocks (its maximum
over each tenth of an N = 16000 run is flat), so a larger peak at a larger N comes from rarer
coincidences of both threads' largest temporaries over more blocks and from glibc keeping freed
heap; with ``MALLOC_TRIM_THRESHOLD_=65536`` (what distributed's nannies set) N = 16000 peaked
no higher than N = 1000 does by default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MIB = 2**20
GIB = 2**30
T_COUNT = 16
X_CHUNK = 1000  # samples per block of the lazy inputs (3 MiB)
GROWTH_LIMIT = 1.15
MEMORY_EVENTS = ("Pausing", "Resuming", "Unmanaged memory", "exceeded", "spill")


# -- helpers that run in any process (children, workers) ---------------------------------------
def rss_bytes() -> int:
    """Current resident set of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def import_tmx_rss() -> int:
    import tmx  # noqa: F401

    return rss_bytes()


def worker_pid() -> int:
    return os.getpid()


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def _lazy_inputs(n: int):
    import dask.array as da
    import numpy as np

    rng = da.random.default_rng(0)
    return rng.standard_normal((n, 28, 28, 1), chunks=(X_CHUNK, 28, 28, 1), dtype=np.float32)


def _model_and_transforms():
    import keras
    import numpy as np

    from tmx import transforms as T

    from .cube import small_cnn

    keras.utils.set_random_seed(0)
    return small_cnn(), T.rotation(np.arange(T_COUNT) * 22.5)


def _report(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# -- children -----------------------------------------------------------------------------------
def child_e2e(n: int) -> None:
    import numpy as np

    import tmx
    from tmx.cube import forward_runner

    model, tset = _model_and_transforms()
    baseline = rss_bytes()
    cube = tmx.activations(model, _lazy_inputs(n), tset)
    nv_lazy = tmx.normalized_variance(cube)
    tasks = len(nv_lazy.data.__dask_graph__())
    start = time.perf_counter()
    nv = nv_lazy.compute()
    wall = time.perf_counter() - start
    runner = forward_runner(cube)
    spb = runner.samples_per_batch(T_COUNT)
    expected = sum(math.ceil(s / spb) for s in cube.data.chunks[0])
    _report(
        {
            "n": n,
            "wall_s": wall,
            "baseline": baseline,
            "peak": peak_rss_bytes(),
            "after": rss_bytes(),
            "cube_bytes": int(cube.size) * 4,
            "units": int(cube.sizes["unit"]),
            "blocks": int(cube.data.numblocks[0]),
            "chunk": list(cube.data.chunksize),
            "tasks": tasks,
            "batches": runner.batches,
            "batches_expected": expected,
            "finite": float(np.isfinite(nv.values).mean()),
        }
    )


def child_save(path: str, min_bytes: int) -> None:
    import tmx

    model, tset = _model_and_transforms()
    probe = tmx.activations(model, _lazy_inputs(2), tset)
    per_sample = T_COUNT * int(probe.sizes["unit"]) * 4
    n = math.ceil(min_bytes / per_sample)
    block = tmx.activations(model, _lazy_inputs(n), tset).data.chunks[0][0]
    n = math.ceil(n / block) * block  # whole sample blocks
    baseline = rss_bytes()
    cube = tmx.activations(model, _lazy_inputs(n), tset)
    start = time.perf_counter()
    tmx.save(cube, path)
    wall = time.perf_counter() - start
    _report(
        {
            "n": n,
            "wall_s": wall,
            "baseline": baseline,
            "peak": peak_rss_bytes(),
            "cube_bytes": int(cube.size) * 4,
            "chunk": list(cube.data.chunksize),
        }
    )


def child_measure(path: str, out: str) -> None:
    import numpy as np

    import tmx

    baseline = rss_bytes()
    nv_lazy = tmx.normalized_variance(tmx.open(path))
    start = time.perf_counter()
    nv = nv_lazy.compute(scheduler="threads")
    wall = time.perf_counter() - start
    np.save(out, nv.values)
    _report({"wall_s": wall, "baseline": baseline, "peak": peak_rss_bytes()})


def run_child(*args: str) -> dict:
    """Run ``python -m benchmarks.memory --child ...`` and return its RESULT line."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"child {args} failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len("RESULT ") :])


# -- the two parts ------------------------------------------------------------------------------
def part_scaling(sizes: list[int]) -> bool:
    rows = [run_child("e2e", str(n)) for n in sizes]
    first = rows[0]
    print(
        f"\n1. End to end: normalized_variance(activations(small CNN, x, {T_COUNT} rotations))"
        f".compute(), {first['units']} units, chunks {tuple(first['chunk'])}, lazy x, "
        "threaded scheduler, one fresh process per N"
    )
    print(
        f"{'N':>6s} {'cube GB':>8s} {'blocks':>6s} {'tasks':>6s} {'wall s':>7s} {'MB/s':>6s} "
        f"{'baseline MiB':>12s} {'peak MiB':>9s} {'peak-base':>9s} {'after MiB':>9s} "
        f"{'peak/peak0':>10s} {'fwd once':>8s}"
    )
    ok = True
    for r in rows:
        ratio = r["peak"] / first["peak"]
        once = r["batches"] == r["batches_expected"]
        ok = ok and once and r["finite"] == 1.0
        print(
            f"{r['n']:6d} {r['cube_bytes'] / 1e9:8.2f} {r['blocks']:6d} {r['tasks']:6d} "
            f"{r['wall_s']:7.1f} {r['cube_bytes'] / 1e6 / r['wall_s']:6.0f} "
            f"{r['baseline'] / MIB:12.0f} {r['peak'] / MIB:9.0f} "
            f"{(r['peak'] - r['baseline']) / MIB:9.0f} {r['after'] / MIB:9.0f} "
            f"{ratio:10.3f} {'yes' if once else 'NO':>8s}"
        )
    worst = max(r["peak"] for r in rows) / first["peak"]
    grows = worst > GROWTH_LIMIT
    print(
        f"criterion peak(N) <= {GROWTH_LIMIT} x peak(N={first['n']}): largest ratio "
        f"{worst:.3f} over a {rows[-1]['n'] / first['n']:.0f}x range of N -> "
        f"{'FAIL' if grows else 'PASS'}"
    )
    return ok and not grows


def _open_store(path: str):
    import tmx

    cube = tmx.open(path)
    return cube, int(cube.size) * cube.dtype.itemsize


def part_out_of_core(cap: int, store: str | None, keep: bool, ratio: float) -> bool:
    import dask
    import numpy as np
    import psutil
    from distributed import Client, LocalCluster

    import tmx

    tmp = tempfile.mkdtemp(prefix="tmx-memory-")
    path = store or os.path.join(tmp, "cube.zarr")
    created = not os.path.exists(path)
    min_bytes = int(ratio * cap)
    saved = None
    try:
        if created:
            saved = run_child("save", path, str(min_bytes))
        cube, nbytes = _open_store(path)
        if nbytes < 3 * cap:
            raise SystemExit(
                f"store {path} holds {nbytes / GIB:.2f} GiB, less than 3 x the cap "
                f"({3 * cap / GIB:.2f} GiB): remove it or pass another --store"
            )
        disk = dir_bytes(path)
        ref_file = os.path.join(tmp, "nv_local.npy")
        local = run_child("measure", path, ref_file)
        reference = np.load(ref_file)

        settings = {
            "distributed.worker.memory.target": False,  # no spilling to disk
            "distributed.worker.memory.spill": False,
            "distributed.worker.memory.pause": 0.8,
            "distributed.worker.memory.terminate": 0.95,
            "distributed.scheduler.allowed-failures": 0,  # a killed worker fails the run
        }
        with (
            dask.config.set(settings),
            LocalCluster(
                n_workers=1,
                threads_per_worker=2,
                memory_limit=cap,
                processes=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            ((addr, pid),) = client.run(worker_pid).items()
            start_rss = client.run(rss_bytes)[addr]
            tmx_rss = client.run(import_tmx_rss)[addr]
            seen = [0]
            stop = threading.Event()

            def poll() -> None:
                proc = psutil.Process(pid)
                while not stop.is_set():
                    try:
                        seen[0] = max(seen[0], proc.memory_info().rss)
                    except psutil.Error:
                        return
                    time.sleep(0.05)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            nv_lazy = tmx.normalized_variance(tmx.open(path))
            begin = time.perf_counter()
            error = None
            try:
                nv = client.compute(nv_lazy).result()
            except Exception as err:  # a killed worker: report, then fail
                error = err
                nv = None
            wall = time.perf_counter() - begin
            stop.set()
            poller.join()
            workers = client.run(worker_pid) if error is None else {}
            same_worker = workers == {addr: pid}
            worker_peak = client.run(peak_rss_bytes)[addr] if same_worker else None
            logs = client.get_worker_logs().get(addr, []) if same_worker else []
            events = [m for _, m in reversed(logs) if any(w in m for w in MEMORY_EVENTS)]

        print(
            f"\n2. Out of core: normalized_variance(tmx.open(store)), cap "
            f"{cap / GIB:.2f} GiB = memory_limit of one distributed worker process (2 threads; "
            "pause at 80 %, killed at 95 %, no spilling, no retries)"
        )
        origin = "saved by this run" if created else "reused"
        print(
            f"store {path} ({origin}): shape {tuple(cube.shape)}, chunks "
            f"{tuple(cube.data.chunksize)} ({np.prod(cube.data.chunksize) * 4 / MIB:.0f} MiB), "
            f"{nbytes / GIB:.2f} GiB uncompressed float32 = {nbytes / cap:.2f} x the cap, "
            f"{disk / GIB:.2f} GiB on disk (zstd)"
        )
        if saved is not None:
            print(
                f"save (fresh process, threaded): {saved['wall_s']:.1f} s, "
                f"{saved['cube_bytes'] / 1e6 / saved['wall_s']:.0f} MB/s, peak RSS "
                f"{saved['peak'] / MIB:.0f} MiB (baseline {saved['baseline'] / MIB:.0f} MiB)"
            )
        print(
            f"worker RSS: {start_rss / MIB:.0f} MiB at start, {tmx_rss / MIB:.0f} MiB after "
            f"import tmx (TensorFlow); cap minus that: {(cap - tmx_rss) / MIB:.0f} MiB"
        )
        print(f"{'run':44s} {'wall s':>7s} {'MB/s':>6s} {'peak MiB':>9s} {'polled':>7s}")
        print(
            f"{'local threaded scheduler, fresh process':44s} {local['wall_s']:7.1f} "
            f"{nbytes / 1e6 / local['wall_s']:6.0f} {local['peak'] / MIB:9.0f} {'':>7s}"
        )
        peak_txt = f"{worker_peak / MIB:9.0f}" if worker_peak else f"{'killed':>9s}"
        rate = f"{nbytes / 1e6 / wall:6.0f}" if error is None else f"{'-':>6s}"
        print(
            f"{'distributed worker under the cap':44s} {wall:7.1f} {rate} "
            f"{peak_txt} {seen[0] / MIB:7.0f}"
        )
        if error is not None:
            print(f"distributed run FAILED: {type(error).__name__}: {error}")
            return False
        equal = np.array_equal(nv.values, reference, equal_nan=True)
        diff = float(np.nanmax(np.abs(nv.values - reference)))
        pauses = sum("Pausing" in m for m in events)
        print(
            f"worker peak / cap: {worker_peak / cap:.2f}; same worker throughout: "
            f"{'yes' if same_worker else 'NO'}; paused (at 80 % of the cap) {pauses} time(s)"
        )
        for m in events[:6]:
            print(f"  {m}")
        print(
            f"result equals the local scheduler's: {'yes' if equal else 'NO'} "
            f"(max abs difference {diff:.3g}); finite: {np.isfinite(nv.values).mean():.3f}"
        )
        return equal and same_worker and worker_peak < cap
    finally:
        if created and not keep and os.path.exists(path):
            shutil.rmtree(path)
        elif created:
            print(f"kept the store {path}")
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,4000,16000", help="N values, comma-separated")
    parser.add_argument("--cap-gib", type=float, default=1.5, help="worker memory limit")
    parser.add_argument("--store", default=None, help="Zarr store to reuse (or save to)")
    parser.add_argument("--keep-store", action="store_true", help="keep a store saved here")
    parser.add_argument(
        "--store-ratio", type=float, default=3.2, help="store size over the cap (at least 3)"
    )
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-out-of-core", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "e2e":
            child_e2e(int(rest[0]))
        elif kind == "save":
            child_save(rest[0], int(rest[1]))
        elif kind == "measure":
            child_measure(rest[0], rest[1])
        return
    if args.store_ratio < 3:
        parser.error("--store-ratio must be at least 3")
    start = time.perf_counter()
    ok = True
    if not args.skip_scaling:
        ok = part_scaling([int(s) for s in args.sizes.split(",")]) and ok
    if not args.skip_out_of_core:
        cap = int(args.cap_gib * GIB)
        ok = part_out_of_core(cap, args.store, args.keep_store, args.store_ratio) and ok
    verdict = "all checks passed" if ok else "SOME CHECK FAILED"
    print(f"\n{verdict}; total {time.perf_counter() - start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
