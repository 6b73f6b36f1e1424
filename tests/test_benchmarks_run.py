"""The benchmarks keep working as tmx changes: every benchmark module imports, and the
hand-written baselines still compute what tmx computes.

The timings themselves are never run here (``benchmarks/`` prints them); this only catches a
benchmark that a change to tmx broke. One did once, unnoticed for a session: the flows
benchmark's plain loop, when ``tmx.flows.flow`` gained its ``Standardize`` first layer.
Modules starting with "_" are runners of the peers, which import the peer (its own virtual
environment), or shared helpers.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import benchmarks

MODULES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name[0] != "_")


def test_there_are_benchmarks() -> None:
    assert {"measures", "flows", "store", "introspect", "attribution"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(getattr(module, "main", None)), f"benchmarks.{name} has no main()"


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_the_flows_plain_loop_computes_the_default_tmx_flow(coupling: str) -> None:
    from benchmarks import flows as bf

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2 * bf.BATCH, bf.D)) * rng.uniform(0.1, 5.0, bf.D) + 3.0).astype(
        np.float32
    )
    order = np.r_[0 : bf.D : 2, 1 : bf.D : 2]
    err, err_inv = bf.check_plain(coupling, {"a": x, "order": order})
    assert err < 1e-4 and err_inv < 1e-4


def test_the_transforms_baseline_op_resamples_like_apply_many() -> None:
    import tensorflow as tf

    from benchmarks import transforms as bt
    from tmx import transforms as T

    size, tset = 12, T.rotation([0.0, 30.0, 90.0, 200.0])
    x = np.random.default_rng(0).normal(size=(2, size, size, 1)).astype(np.float32)
    params = np.stack([bt.projective_params(e[0], size) for e in tset.elements])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.repeat(x, len(tset), axis=0),
        transforms=tf.tile(params, [len(x), 1]),
        output_shape=[size, size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    expected = np.asarray(T.apply_many(tset, x)).reshape(-1, size, size, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
