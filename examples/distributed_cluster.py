"""Distributed: the same cube and measure on a dask.distributed cluster.

Starts a `LocalCluster` of 2 worker processes (1 thread each), computes the normalized variance
of a lazy cube on it, and checks that the result equals the one of dask's local threaded
scheduler. The model is one key of the cube's graph: it travels to each worker once (as
`.keras` bytes), is loaded and compiled once per worker process, and stays cached there for
later computations of the same cube.

For a real cluster, replace the LocalCluster with `Client("tcp://scheduler:8786")`: every
worker needs tmx (and the same TensorFlow/Keras) installed, and custom layers must be
registered Keras serializables.

Run: .venv/bin/python examples/distributed_cluster.py   (about 35 s on 2 cores, no network)

(The file is not called distributed.py: a script of that name would shadow the `distributed`
package it imports.)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up (workers too)

import logging
import time

import numpy as np
from distributed import Client, LocalCluster

import tmx
from tmx import transforms as T


def model_loads() -> int:
    """How many models this process has loaded from bytes (runs on each worker)."""
    from tmx.cube import ForwardRunner

    return ForwardRunner.loads


def main() -> None:
    data = tmx.datasets.digits(16)
    model = tmx.models.small_cnn((16, 16, 1), seed=0)
    cube = tmx.activations(
        model,
        data.x_test[:400],
        T.rotation(np.arange(0, 360, 45)),
        chunks={"sample": 50},  # 8 blocks = 8 tasks, each one forward pass
    )
    print(f"cube {dict(cube.sizes)} in {cube.data.npartitions} blocks")

    t = time.perf_counter()
    local = tmx.normalized_variance(cube).compute(scheduler="threads")
    print(f"local threaded scheduler: {time.perf_counter() - t:.1f} s")

    # processes=True: real worker processes, as on a cluster (hence the __main__ guard below)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # TensorFlow workers can take > 4 s to exit; hide the nanny's warning about it
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        workers = client.scheduler_info()["workers"]
        print(f"cluster: {len(workers)} workers × 1 thread at {cluster.scheduler_address}")

        nv = tmx.normalized_variance(cube)  # lazy; the default scheduler is now the client
        t = time.perf_counter()
        remote = nv.compute()
        first = time.perf_counter() - t
        t = time.perf_counter()
        again = nv.compute()
        second = time.perf_counter() - t
        print(f"distributed: first compute {first:.1f} s (ships, loads and compiles the model),")
        print(f"             second compute {second:.1f} s (model cached in each worker)")
        loads = client.run(model_loads)
        print(f"models loaded per worker process: {sorted(loads.values())}")

    difference = float(np.nanmax(np.abs(remote.values - local.values)))
    np.testing.assert_allclose(remote.values, local.values, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(again.values, remote.values)
    print(f"distributed == local (max |difference| = {difference:.2g})")
    per_layer = tmx.by_layer(remote)
    values = zip(per_layer.layer.values.tolist(), per_layer.values.round(3).tolist(), strict=True)
    print("NV per layer:", ", ".join(f"{layer} {value}" for layer, value in values))


if __name__ == "__main__":  # required: worker processes re-import this file
    t0 = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - t0:.1f} s")
