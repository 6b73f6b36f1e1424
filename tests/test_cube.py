"""tmx.activations: the lazy cube, its coordinates, its forward passes and its inputs."""

from __future__ import annotations

import logging
import re

import dask
import dask.array as da
import keras
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx import transforms as T
from tmx.cube import ForwardRunner, activations, forward_runner


@keras.saving.register_keras_serializable(package="tmx_tests")
class CountImages(keras.layers.Layer):
    """Identity layer counting the images that pass through it (a graph-mode side effect)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64")

    def call(self, x):
        self.count.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "int64"))
        return x


def small_cnn(counting: bool = False, size: int = 12) -> keras.Model:
    inp = keras.Input((size, size, 1), name="image")
    h = CountImages(name="counter")(inp) if counting else inp
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(3, 3, padding="valid", name="conv2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(5, name="dense")(h)
    model = keras.Model(inp, out, name="small_cnn")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    if counting:
        model.get_layer("counter").count.assign(0)
    return model


LAYERS = ["conv1", "pool", "conv2", "flat", "dense"]


def reference(model, x, tset, layers=LAYERS):
    """Direct calls of a multi-output model on the transformed inputs: (N, T, U)."""
    exposed = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
    per_t = []
    for j in range(len(tset)):
        outs = exposed([T.apply(tset, x, j)], training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        per_t.append(np.concatenate([np.asarray(o).reshape(len(x), -1) for o in outs], axis=1))
    return np.stack(per_t, axis=1)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).normal(size=(23, 12, 12, 1)).astype(np.float32)


TSET = T.union(T.rotation([0.0, 90.0, 33.0]), T.translation(2, -1), T.flip("x"))


def test_values_equal_a_direct_call_of_the_exposed_model(data):
    model = small_cnn()
    cube = activations(model, data, TSET, layers=LAYERS, batch_size=16)
    expected = reference(model, data, TSET)
    np.testing.assert_allclose(cube.values, expected, rtol=1e-6, atol=1e-6)
    assert cube.dtype == np.float32 and cube.name == "activation"
    assert cube.dims == ("sample", "transformation", "unit")
    assert isinstance(cube.data, da.Array)


def test_building_runs_no_forward_pass_and_each_block_runs_once(data):
    model = small_cnn(counting=True)
    counter = model.get_layer("counter").count
    few = activations(model, data, TSET, layers=LAYERS, batch_size=10, chunks={"sample": 8})
    many = activations(
        model, data, TSET, layers=LAYERS, batch_size=10, chunks={"sample": 8, "unit": 50}
    )
    assert int(counter.numpy()) == 0
    assert forward_runner(few).batches == 0
    assert len(many.data.chunks[2]) > 5  # many unit chunks
    with dask.config.set(scheduler="synchronous"):  # the layer's counter is not thread-safe
        ref = few.values
    images_few = int(counter.numpy())
    # 3 sample blocks (8, 8, 7), 2 samples per batch of 10 images (T = 5): 4 + 4 + 4 batches,
    # the last one of 1 sample not padded to 2
    assert forward_runner(few).batches == 12
    assert images_few == 23 * len(TSET) == forward_runner(few).images
    np.testing.assert_array_equal(many.values, ref)  # threaded: the runner's counts are locked
    assert forward_runner(many).batches == 12  # not multiplied by the unit chunks
    assert forward_runner(many).images == images_few


def test_fixed_batch_shapes_and_batch_size_independence(data):
    model = small_cnn()
    small = activations(model, data, TSET, layers=LAYERS, batch_size=5)
    large = activations(model, data, TSET, layers=LAYERS, batch_size=64)
    np.testing.assert_allclose(small.values, large.values, rtol=1e-5, atol=1e-6)
    runner = forward_runner(small)
    assert len(runner._functions) == 1  # one transformation block: traced once
    (fn,) = runner._functions.values()
    (concrete,) = fn._list_all_concrete_functions_for_serialization() or [
        fn.get_concrete_function()
    ]
    assert concrete.structured_input_signature[0][0].shape[0] == runner.samples_per_batch(5)


def test_chunking_does_not_change_values(data):
    model = small_cnn()
    a = activations(model, data, TSET, layers=LAYERS, chunks={"sample": 5, "transformation": 2})
    b = activations(model, data, TSET, layers=LAYERS, chunks={"unit": 77})
    assert a.data.chunks[0] == (5, 5, 5, 5, 3) and a.data.chunks[1] == (2, 2, 1)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-6)
    # one compiled function per transformation block and call shape: blocks of 5 and 3
    # samples run calls of 8 and 4 samples (powers of two), not whole batches
    functions = forward_runner(a)._functions
    assert {indices for indices, _ in functions} == {(0, 1), (2, 3), (4,)}
    assert {rows for _, rows in functions} == {8, 4}


def test_coordinates_and_attrs(data):
    model = small_cnn()
    labels = np.arange(23) % 3
    cube = activations(model, data, TSET, layers=["conv1", "dense"], labels=labels)
    conv = cube.sel(unit=cube.layer == "conv1")
    assert conv.sizes["unit"] == 12 * 12 * 4
    # (y, x, channel) order, C order of the NHWC output
    np.testing.assert_array_equal(conv.channel.values[:6], [0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(conv.x.values[:6], [0, 0, 0, 0, 1, 1])
    assert conv.y.values[4 * 12] == 1 and conv.x.values[4 * 12] == 0
    dense = cube.sel(unit=cube.layer == "dense")
    np.testing.assert_array_equal(dense.channel.values, np.arange(5))
    assert (dense.y.values == -1).all() and (dense.x.values == -1).all()
    np.testing.assert_array_equal(cube.label.values, labels)
    np.testing.assert_array_equal(cube.angle.values, [0, 90, 33, 0, 0])
    assert list(cube.transform.values) == list(TSET.labels)
    assert cube.angle.attrs["units"] == "degrees"
    attrs = cube.attrs
    assert attrs["layers"] == ["conv1", "dense"]
    assert attrs["model_name"] == "small_cnn"
    assert len(attrs["model_weights_sha256"]) == 64
    assert T.from_dict(attrs["transforms"]) == TSET
    assert attrs["input_shape"] == [12, 12, 1]
    assert {"tmx_version", "tensorflow_version", "keras_version", "created"} <= set(attrs)
    # the unit value at (y=2, x=3, channel=1) of conv1 is the layer output at that position
    exposed = keras.Model(model.inputs, model.get_layer("conv1").output)
    direct = np.asarray(exposed([T.apply(TSET, data, 1)], training=False))
    u = int(
        np.flatnonzero(
            (cube.layer == "conv1") & (cube.y == 2) & (cube.x == 3) & (cube.channel == 1)
        )[0]
    )
    np.testing.assert_allclose(cube.isel(transformation=1, unit=u).values, direct[:, 2, 3, 1], 1e-6)


def test_default_layers_are_every_layer_output(data):
    model = small_cnn()
    cube = activations(model, data[:3])
    assert cube.attrs["layers"] == LAYERS
    assert cube.sizes["transformation"] == 1
    assert list(cube.transform.values) == ["identity"]
    np.testing.assert_allclose(
        cube.values[:, 0], reference(model, data[:3], T.identity())[:, 0], 1e-6
    )


def test_inputs_numpy_dataarray_dask_zarr_agree(data, tmp_path):
    import zarr

    model = small_cnn()
    base = activations(model, data, TSET, layers=LAYERS).values
    as_xr = xr.DataArray(
        data, dims=("sample", "h", "w", "c"), coords={"sample": np.arange(100, 123)}
    ).assign_coords(label=("sample", np.arange(23) % 2))
    cube = activations(model, as_xr, TSET, layers=LAYERS)
    np.testing.assert_array_equal(cube.sample.values, np.arange(100, 123))
    np.testing.assert_array_equal(cube.label.values, np.arange(23) % 2)
    np.testing.assert_allclose(cube.values, base, rtol=1e-6, atol=1e-6)
    lazy = da.from_array(data, chunks=(7, 12, 12, 1))
    np.testing.assert_allclose(
        activations(model, lazy, TSET, layers=LAYERS).values, base, rtol=1e-6, atol=1e-6
    )
    z = zarr.create_array(tmp_path / "x.zarr", shape=data.shape, chunks=(5, 12, 12, 1), dtype="f4")
    z[:] = data
    np.testing.assert_allclose(
        activations(model, z, TSET, layers=LAYERS).values, base, rtol=1e-6, atol=1e-6
    )


def test_lazy_input_is_read_block_by_block(data):
    reads = []

    def record(block, block_info=None):
        reads.append(block_info[0]["chunk-location"][0])
        return block

    lazy = da.from_array(data, chunks=(5, 12, 12, 1)).map_blocks(record, dtype=data.dtype)
    cube = activations(small_cnn(), lazy, TSET, layers=["dense"], chunks={"sample": 5})
    assert reads == []  # building reads nothing
    with dask.config.set(scheduler="synchronous"):
        cube.isel(sample=slice(5, 10)).compute()
    assert reads == [1]


def test_model_from_a_keras_file(data, tmp_path):
    model = small_cnn()
    path = tmp_path / "model.keras"
    model.save(path)
    cube = activations(str(path), data[:4], TSET, layers=["dense"])
    np.testing.assert_allclose(
        cube.values, reference(model, data[:4], TSET, ["dense"]), rtol=1e-6, atol=1e-6
    )


def test_noise_is_independent_of_chunking(data):
    model = small_cnn()
    noisy = T.gaussian_noise([0.5, 1.0], seed=7)
    a = activations(model, data, noisy, layers=["dense"], chunks={"sample": 4}, batch_size=2)
    b = activations(model, data, noisy, layers=["dense"], chunks={"sample": 23})
    va, vb = a.values, b.values
    np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6 * np.abs(vb).max())
    clean = activations(model, data, T.identity(), layers=["dense"]).values
    assert np.abs(vb - clean).mean() > 0.01 * np.abs(clean).mean()  # the noise is there


def test_vector_inputs_without_transformations():
    inp = keras.Input((6,))
    out = keras.layers.Dense(3, name="d")(keras.layers.Dense(4, name="h")(inp))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(9, 6)).astype(np.float32)
    cube = activations(model, x)
    assert cube.shape == (9, 1, 7)
    np.testing.assert_allclose(cube.values[:, 0, 4:], model(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="NHWC"):
        activations(model, x, T.rotation([0, 90]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": ["nope"]}, "nope"),
        ({"transforms": "rotation"}, "transforms must be a TransformationSet"),
        ({"labels": [1, 2]}, "labels must have one entry per sample"),
        ({"chunks": {"samples": 3}}, "chunks: unknown dims"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"layers": []}, "at least one layer"),
    ],
)
def test_bad_arguments(data, kwargs, match):
    kwargs = {"transforms": TSET, **kwargs}
    with pytest.raises(ValueError, match=match):
        activations(small_cnn(), data, **kwargs)


def test_bad_inputs():
    model = small_cnn()
    with pytest.raises(ValueError, match="x must"):
        activations(model, "images")
    with pytest.raises(ValueError, match="sample"):
        activations(model, xr.DataArray(np.zeros((2, 12, 12, 1)), dims=("n", "h", "w", "c")))


def test_runner_pickles_the_model_as_keras_bytes(data):
    import pickle

    model = small_cnn()
    cube = activations(model, data[:4], TSET, layers=LAYERS)
    runner = forward_runner(cube)
    clone = pickle.loads(pickle.dumps(runner))
    assert isinstance(clone, ForwardRunner) and clone._model is None
    out = clone(data[:4], np.arange(4), tuple(range(len(TSET))))
    np.testing.assert_allclose(out, cube.values, rtol=1e-6, atol=1e-6)
    assert ForwardRunner.loads >= 1


def test_distributed_local_cluster_gives_the_same_numbers(data):
    distributed = pytest.importorskip("distributed")
    model = small_cnn()
    cube = activations(model, data, TSET, layers=LAYERS, chunks={"sample": 4})
    expected = activations(model, data, TSET, layers=LAYERS).values
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = cube.data.compute()
        again = cube.sum("unit").compute()
        counts = client.run(
            lambda: (
                __import__("tmx.cube").cube.ForwardRunner.loads,
                __import__("tmx.cube").cube.ForwardRunner.unpickles,
            )
        )
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(again.values, expected.sum(axis=2), rtol=1e-5)
    loads = [c[0] for c in counts.values()]
    unpickles = [c[1] for c in counts.values()]
    # 6 sample blocks, two computes: the model travelled to each worker once per compute, not
    # once per task, and was loaded (and compiled) at most once per worker
    assert sum(unpickles) < 2 * 6
    assert all(n <= 1 for n in loads) and sum(loads) >= 1
    assert tmx.transforms.from_dict(cube.attrs["transforms"]) == TSET


def test_layers_inside_nested_models_and_shared_layers(data):
    inner = keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Conv2D(2, 3, padding="same", name="inner_conv")],
        name="block",
    )
    inp = keras.Input((12, 12, 1))
    h = inner(inp)
    shared = keras.layers.Dense(3, name="shared")
    a = shared(keras.layers.Flatten(name="fa")(h))
    b = shared(keras.layers.Flatten(name="fb")(keras.layers.Activation("relu", name="act")(h)))
    model = keras.Model(inp, keras.layers.Concatenate(name="cat")([a, b]))
    layers = [("block", "inner_conv"), {"name": "shared", "call": 0}, {"name": "shared", "call": 1}]
    cube = activations(model, data[:5], T.rotation([0, 90]), layers=layers)
    assert cube.attrs["layers"] == ["block/inner_conv", "shared", "shared#1"]
    for j in range(2):
        xt = T.apply(T.rotation([0, 90]), data[:5], j)
        conv = np.asarray(inner(xt)).reshape(5, -1)
        first = np.asarray(shared(np.asarray(inner(xt)).reshape(5, -1)))
        relu = np.maximum(np.asarray(inner(xt)), 0).reshape(5, -1)
        second = np.asarray(shared(relu))
        expected = np.concatenate([conv, first, second], axis=1)
        np.testing.assert_allclose(cube.values[:, j], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="called 2 times"):
        activations(model, data[:5], layers=["shared"])


def test_cubes_of_one_model_share_compiled_functions_and_see_new_weights(data):
    """A second cube of the same model, layers, set and batch reuses the first cube's traced
    function (no retrace), and still computes with the model's current weights."""
    model = small_cnn()
    first = activations(model, data, TSET, layers=LAYERS, batch_size=16)
    _ = first.values
    second = activations(model, data, TSET, layers=LAYERS, batch_size=16)
    before = second.values
    fns_a, fns_b = forward_runner(first)._functions, forward_runner(second)._functions
    assert fns_a and set(fns_a) == set(fns_b)
    assert all(fns_a[k] is fns_b[k] for k in fns_a)
    other = activations(model, data, TSET, layers=["conv1"], batch_size=16)
    _ = other.values
    assert not any(
        f is g for f in forward_runner(other)._functions.values() for g in fns_a.values()
    )
    kernel = model.get_layer("conv1").kernel
    kernel.assign(np.asarray(kernel) * -2.0)
    third = activations(model, data, TSET, layers=LAYERS, batch_size=16)
    np.testing.assert_allclose(third.values, reference(model, data, TSET), rtol=1e-5, atol=1e-5)
    assert not np.allclose(third.values, before)


# -- batching, memory planning, shape checks, single descriptors, progress ---------------------
def test_the_last_batch_is_padded_to_a_power_of_two_not_a_whole_batch(data):
    """3 samples × 2 rotations with the defaults ran 256 images for 6; now 4 samples' worth."""
    model = small_cnn(counting=True)
    counter = model.get_layer("counter").count
    rot = T.rotation([0.0, 90.0])
    cube = activations(model, data[:3], rot, layers=LAYERS)
    with dask.config.set(scheduler="synchronous"):
        values = cube.values
    assert int(counter.numpy()) == forward_runner(cube).images == 4 * 2  # pow2(3) × T
    np.testing.assert_allclose(values, reference(model, data[:3], rot), rtol=1e-6, atol=1e-6)
    # default chunks of a longer input: whole batches, no image run twice or padded
    counter.assign(0)
    cube = activations(model, data, TSET, layers=LAYERS, batch_size=80)
    with dask.config.set(scheduler="synchronous"):
        cube.compute()
    # 16 samples a batch: one full batch, then 7 run as 8 (was: a second batch of 16)
    assert int(counter.numpy()) == (16 + 8) * len(TSET) == forward_runner(cube).images


def test_memory_budget_plans_the_batch_and_chunks(data):
    """A budget too small for the default blocks: the planned blocks and forward batch fit
    it, the values do not change, and no image is run twice."""
    model = small_cnn(counting=True)
    counter = model.get_layer("counter").count
    cube = activations(model, data, TSET, layers=["conv1", "dense"], memory="256kB")
    units = cube.sizes["unit"]
    s, t, _ = cube.data.chunksize
    runner = forward_runner(cube)
    assert cube.data.numblocks[0] > 1  # the budget split the samples
    assert s * t * units * 4 <= 256_000  # the float32 block alone fits the budget
    assert runner.batch_size < 256 and runner.batch_size & (runner.batch_size - 1) == 0
    assert cube.attrs["batch_size"] == runner.batch_size
    with dask.config.set(scheduler="synchronous"):
        small = cube.values
    assert int(counter.numpy()) == 23 * len(TSET) == runner.images
    big = activations(model, data, TSET, layers=["conv1", "dense"], memory=2**30).values
    np.testing.assert_allclose(small, big, rtol=1e-6, atol=1e-6)
    ref = reference(model, data, TSET, ["conv1", "dense"])
    np.testing.assert_allclose(small, ref, rtol=1e-5, atol=1e-5)
    # NV does not move with the planned chunks
    nv_small = tmx.normalized_variance(cube).values
    nv_big = tmx.normalized_variance(
        activations(model, data, TSET, layers=["conv1", "dense"], chunks={"sample": 23})
    ).values
    np.testing.assert_allclose(nv_small, nv_big, rtol=1e-9, equal_nan=True)
    with pytest.raises(ValueError, match="memory"):
        activations(model, data, TSET, memory="lots")
    with pytest.raises(ValueError, match="memory"):
        activations(model, data, TSET, memory=-5)


def _planned(caplog, model, x, tset, **kwargs):
    """The cube ``activations`` builds (lazily) and the forward batch its plan logged, with
    the local scheduler running 2 tasks at once."""
    caplog.clear()
    with dask.config.set(num_workers=2), caplog.at_level(logging.INFO, logger="tmx"):
        cube = activations(model, x, tset, **kwargs)
    plans = [
        r.getMessage() for r in caplog.records if r.name == "tmx" and "batch " in r.getMessage()
    ]
    assert len(plans) == 1, plans
    found = re.search(
        r"batch (\d+) images, chunks \(sample (\d+), transformation (\d+), unit (\d+)\)", plans[0]
    )
    assert found, plans[0]
    batch, *logged = (int(g) for g in found.groups())
    sample, transformation, unit = (c[0] for c in cube.data.chunks)
    assert logged == [sample, transformation, unit]  # the log tells the cube's chunks
    return cube, batch, sample, transformation, unit


def test_plan_of_a_wide_model_bounds_the_blocks(caplog):
    """MobileNetV2-sized width (4 M units per image, T = 8): the plan keeps the forward batch
    and the unit chunks small and never multiplies samples; a narrower model gets 64 MiB
    blocks of whole forward batches."""
    inp = keras.Input((256, 256, 1))
    wide = keras.Model(inp, keras.layers.Conv2D(61, 1, name="wide")(inp))  # 3,997,696 units
    x = np.zeros((16, 256, 256, 1), np.float32)
    gib, mib = 2**30, 2**20
    cube, batch, sample, transformation, unit = _planned(
        caplog, wide, x, T.brightness(np.linspace(-0.1, 0.1, 8)), memory=2 * gib
    )
    units = cube.sizes["unit"]
    assert units == 3_997_696
    assert batch * 4 * units * 2 <= 2 * gib // 4  # the forward batch's outputs
    assert sample * transformation * unit * 4 <= 8 * mib  # one unit chunk
    assert sample in (1, 16)  # one sample block (no partial moments) or the smallest
    narrow_model = small_cnn(size=28)
    x = np.zeros((2000, 28, 28, 1), np.float32)
    cube, batch, sample, transformation, unit = _planned(
        caplog,
        narrow_model,
        x,
        T.brightness(np.linspace(-0.1, 0.1, 16)),
        memory=2 * gib,
        batch_size=256,
    )
    units = cube.sizes["unit"]
    assert batch == 256 and transformation == 16
    assert sample * 16 * units * 4 <= 64 * mib and sample % (256 // 16) == 0
    assert unit == units
    assert sample * 16 * units * 4 > 32 * mib  # blocks near the 64 MiB target, not tiny ones


def test_shape_mistakes_fail_when_the_cube_is_built(data):
    model = small_cnn()
    nchw = np.transpose(data, (0, 3, 1, 2))  # (23, 1, 12, 12)
    with pytest.raises(ValueError, match="channels-first") as err:
        activations(model, nchw, TSET)
    text = str(err.value)
    assert "x has shape (23, 1, 12, 12)" in text and "(N, 12, 12, 1)" in text
    assert "np.transpose(x, (0, 2, 3, 1))" in text
    with pytest.raises(ValueError, match=r"x has shape \(23, 10, 10, 1\).*\(N, 12, 12, 1\)"):
        activations(model, data[:, :10, :10], TSET)
    with pytest.raises(ValueError, match="sample axis"):
        activations(model, data[0], TSET)
    inp = keras.Input((12, 10, 1))
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(
        keras.layers.Conv2D(2, 3, name="c")(inp)
    )
    wide_model = keras.Model(inp, pooled)
    oblong = np.zeros((4, 12, 10, 1), np.float32)
    with pytest.raises(ValueError, match=r"transformation 1 .*\(12, 10, 1\)"):
        activations(wide_model, oblong, T.rot90([0, 1]))
    assert activations(wide_model, oblong, T.rot90([0, 2])).shape == (4, 2, 10 * 8 * 2 + 2)


def test_a_single_layer_descriptor_is_not_read_letter_by_letter(data):
    model = small_cnn()
    one = activations(model, data[:4], TSET, layers="conv1")
    assert one.attrs["layers"] == ["conv1"]
    np.testing.assert_allclose(
        one.values, reference(model, data[:4], TSET, ["conv1"]), rtol=1e-6, atol=1e-6
    )
    assert activations(model, data[:4], layers=-1).attrs["layers"] == ["dense"]
    assert activations(model, data[:4], layers=("pool",)).attrs["layers"] == ["pool"]


def test_progress_reports_blocks_when_asked_and_is_quiet_by_default(data, capsys):
    model = small_cnn()
    quiet = activations(model, data, TSET, layers=["dense"], chunks={"sample": 8})
    assert forward_runner(quiet).progress is False  # None under pytest: off
    quiet.compute()
    assert "block" not in capsys.readouterr().out
    loud = activations(model, data, TSET, layers=["dense"], chunks={"sample": 8}, progress=True)
    runner = forward_runner(loud)
    assert runner.total_blocks == 3
    loud.compute()
    out = capsys.readouterr().out
    assert "3/3" in out and "block" in out
    assert runner.blocks == 3
    with pytest.raises(ValueError, match="progress"):
        activations(model, data, TSET, progress="yes")
