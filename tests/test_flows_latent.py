"""transform / inverse / swap / interpolate of ``tmx.flows`` (``tmx/flows/_latent.py``)."""

import logging

import dask
import dask.array as da
import keras
import numpy as np
import pytest
import xarray as xr

from tmx.cube import unit_coords
from tmx.flows import flow, interpolate, inverse, swap, transform
from tmx.flows.layers import Flow

from .flow_helpers import perturb

D = 6
N_SAMPLES, N_TRANSFORMATIONS = 12, 3


def _perturb(model, seed=0, scale=0.3):
    return perturb(model, seed, scale)


def _cube(values, layer="h"):
    """A cube-like DataArray (sample, transformation, unit) with the cube's coordinates."""
    n_s, n_t, d = values.shape
    coords = {k: ("unit", c) for k, c in unit_coords([layer], [(d,)]).items()}
    coords.update(
        sample=np.arange(n_s),
        label=("sample", np.arange(n_s) % 3),
        transformation=np.arange(n_t),
        angle=("transformation", np.linspace(0.0, 30.0, n_t)),
        unit=np.arange(d),
    )
    return xr.DataArray(values, dims=("sample", "transformation", "unit"), coords=coords)


def _trained(d, values, *, coupling="affine", seed=3, layer="h", meta=True):
    f = flow(d, blocks=2, coupling=coupling, hidden=(16,), seed=seed)
    f(values.reshape(-1, d))  # data-initialised ActNorm sees its first batch
    _perturb(f, seed=seed)
    if meta:
        f.factors = ["residual", "a", "b"]
        f.dimensions = [2, 1, 3]
        f.unit_coords = {
            **{k: v.tolist() for k, v in unit_coords([layer], [(d,)]).items()},
            "unit": list(range(d)),
        }
    return f


@pytest.fixture(scope="module")
def cube():
    rng = np.random.default_rng(0)
    values = rng.normal(0.2, 1.0, (N_SAMPLES, N_TRANSFORMATIONS, D)).astype(np.float32)
    return _cube(values)


@pytest.fixture(scope="module")
def tflow(cube):
    return _trained(D, cube.values)


def _chunked(arr, chunks):
    """arr with dask-backed data in ``chunks`` (its coordinates stay numpy, as in a cube)."""
    return arr.copy(data=da.from_array(arr.values, chunks=chunks))


def _direct(f, values):
    """The flow called directly on the rows (the closed form of transform)."""
    rows = values.reshape(-1, values.shape[-1])
    return keras.ops.convert_to_numpy(f(rows)[0]).reshape(values.shape)


def test_transform_equals_the_flow_with_labels(tflow, cube):
    z = transform(tflow, cube)
    assert z.name == "latent"
    assert z.dims == ("sample", "transformation", "latent")
    np.testing.assert_allclose(z.values, _direct(tflow, cube.values), rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(z.values - cube.values)) > 1e-2  # the flow is not the identity
    assert z["factor"].values.tolist() == ["residual"] * 2 + ["a"] + ["b"] * 3
    assert z["latent"].values.tolist() == list(range(D))
    np.testing.assert_array_equal(z["label"].values, cube["label"].values)
    np.testing.assert_array_equal(z["angle"].values, cube["angle"].values)
    for key in ("layer", "channel", "y", "x", "unit"):
        assert key not in z.coords
    assert z.attrs["factors"] == ["residual", "a", "b"]
    assert z.attrs["dimensions"] == [2, 1, 3]


def test_transform_other_dim_orders_and_plain_arrays(tflow, cube):
    z = transform(tflow, cube.transpose("unit", "sample", "transformation"))
    assert z.dims == ("latent", "sample", "transformation")
    expected = _direct(tflow, cube.values)
    np.testing.assert_allclose(
        z.transpose("sample", "transformation", "latent"), expected, rtol=1e-5, atol=1e-5
    )
    rows = cube.values.reshape(-1, D)
    z2 = transform(tflow, rows, batch_size=7)  # several calls per block
    assert z2.dims == ("sample", "latent")
    np.testing.assert_allclose(z2.values, expected.reshape(-1, D), rtol=1e-5, atol=1e-5)


def test_inverse_round_trip_restores_unit_coords(tflow, cube):
    back = inverse(tflow, transform(tflow, cube))
    assert back.name == "activation"
    assert back.dims == cube.dims
    # float32 round trip through a perturbed affine flow (~1e-5 of the values)
    np.testing.assert_allclose(back.values, cube.values, rtol=1e-5, atol=1e-5)
    for key in ("unit", "layer", "channel", "y", "x"):
        np.testing.assert_array_equal(back[key].values, cube[key].values)
        assert back[key].dims == ("unit",)
    assert "unit" in back.indexes and "layer" not in back.indexes
    np.testing.assert_array_equal(back["label"].values, cube["label"].values)


def test_dask_input_stays_lazy_and_chunking_does_not_matter(tflow, cube):
    calls = []

    def counting(dsk, keys, **kwargs):
        calls.append(1)
        return dask.get(dsk, keys, **kwargs)

    eager = transform(tflow, cube).values
    with dask.config.set(scheduler=counting):
        lazy = {
            chunks: transform(tflow, _chunked(cube, chunks))
            for chunks in [(5, 1, 2), (12, 3, 6), (1, 2, 6)]
        }
        back = inverse(tflow, lazy[(5, 1, 2)])
        assert not calls  # nothing computed yet
        for z in [*lazy.values(), back]:
            assert z.chunks is not None
        assert lazy[(5, 1, 2)].chunks[-1] == (D,)  # the unit axis in one chunk
        values = {chunks: z.values for chunks, z in lazy.items()}
        back = back.values
        assert calls
    for v in values.values():  # equal up to float32 rounding of the batched products
        np.testing.assert_allclose(v, eager, rtol=1e-6, atol=5e-6)
    np.testing.assert_allclose(back, cube.values, rtol=1e-5, atol=1e-5)


def test_swap_takes_the_factor_block_from_b(tflow, cube):
    a, b = cube.isel(sample=slice(0, 6)), cube.isel(sample=slice(6, 12))
    za = transform(tflow, a).values
    zb = transform(tflow, b).values
    for factor, cols in [("a", [2]), (["a", "b"], [2, 3, 4, 5]), ("residual", [0, 1])]:
        s = swap(tflow, a, b, factor=factor)
        assert s.name == "activation" and s.dims == a.dims
        np.testing.assert_array_equal(s["sample"].values, a["sample"].values)
        np.testing.assert_array_equal(s["layer"].values, a["layer"].values)
        zs = transform(tflow, s).values
        rest = [c for c in range(D) if c not in cols]
        np.testing.assert_allclose(zs[..., cols], zb[..., cols], rtol=0, atol=1e-4)
        np.testing.assert_allclose(zs[..., rest], za[..., rest], rtol=0, atol=1e-4)
    # b in another dim order pairs with a by position
    s2 = swap(tflow, a, b.transpose("unit", "transformation", "sample"), factor="a")
    np.testing.assert_allclose(s2.values, swap(tflow, a, b, factor="a").values, atol=1e-6)


def test_interpolate_goes_from_a_to_the_swap(tflow, cube):
    a, b = cube.isel(sample=slice(0, 6)), cube.isel(sample=slice(6, 12))
    out = interpolate(tflow, a, b, factor="b", steps=5)
    assert out.dims == ("step", *a.dims)
    np.testing.assert_allclose(out["alpha"].values, np.linspace(0, 1, 5))
    np.testing.assert_allclose(out.isel(step=0).values, a.values, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        out.isel(step=-1).values, swap(tflow, a, b, factor="b").values, rtol=0, atol=1e-6
    )
    za, zb = transform(tflow, a).values, transform(tflow, b).values
    mid = transform(tflow, out.isel(step=2)).values
    np.testing.assert_allclose(mid[..., 3:], 0.5 * (za[..., 3:] + zb[..., 3:]), atol=1e-4)
    np.testing.assert_allclose(mid[..., :3], za[..., :3], atol=1e-4)
    lazy = interpolate(tflow, _chunked(a, (2, 3, 3)), b, factor="b", steps=5)
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.values, out.values, rtol=1e-6, atol=5e-6)


def test_bad_arguments_name_the_argument(tflow, cube):
    with pytest.raises(ValueError, match="responses"):
        transform(tflow, cube.isel(unit=slice(0, 5)))
    with pytest.raises(ValueError, match=r"responses.*'channel'"):
        transform(tflow, cube.assign_coords(channel=("unit", np.arange(D)[::-1])))
    with pytest.raises(ValueError, match="responses"):
        transform(tflow, cube.rename(unit="neuron"))
    with pytest.raises(ValueError, match="responses"):
        transform(tflow, np.zeros((2, 3, D)))
    with pytest.raises(ValueError, match=r"^flow"):
        transform(keras.Sequential([keras.layers.Dense(D)]), cube)
    with pytest.raises(ValueError, match=r"^z"):
        inverse(tflow, transform(tflow, cube).isel(latent=slice(0, 4)))
    with pytest.raises(ValueError, match=r"^z"):
        inverse(tflow, transform(tflow, cube).assign_coords(factor=("latent", ["x"] * D)))
    with pytest.raises(ValueError, match=r"factor.*'nope'.*\['residual', 'a', 'b'\]"):
        swap(tflow, cube, cube, factor="nope")
    with pytest.raises(ValueError, match=r"^b"):
        swap(tflow, cube, cube.isel(sample=slice(0, 3)), factor="a")
    with pytest.raises(ValueError, match="steps"):
        interpolate(tflow, cube, cube, factor="a", steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        transform(tflow, cube, batch_size=0)
    fresh = flow(D, blocks=1, hidden=(4,), seed=0)  # data ActNorm never saw data
    with pytest.raises(ValueError, match=r"^flow.*ActNorm"):
        transform(fresh, cube)


def test_flow_without_metadata_and_additive_coupling(cube):
    f = _trained(D, cube.values, coupling="additive", seed=4, meta=False)
    z = transform(f, cube)
    assert z["factor"].values.tolist() == ["latent"] * D
    np.testing.assert_allclose(z.values, _direct(f, cube.values), rtol=1e-5, atol=1e-5)
    back = inverse(f, z)
    np.testing.assert_allclose(back.values, cube.values, rtol=0, atol=1e-5)
    assert back["unit"].values.tolist() == list(range(D))
    assert "layer" not in back.coords
    whole = swap(f, cube, cube[::-1], factor="latent")  # every dimension from b
    np.testing.assert_allclose(whole.values, cube.values[::-1], rtol=0, atol=1e-5)


def test_transform_after_save_and_load(tflow, cube, tmp_path):
    path = tmp_path / "flow.keras"
    tflow.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Flow)
    z = transform(loaded, cube)
    np.testing.assert_allclose(z.values, transform(tflow, cube).values, rtol=1e-6, atol=5e-6)
    back = inverse(loaded, z)
    np.testing.assert_array_equal(back["layer"].values, cube["layer"].values)


# -- the rest of the model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skip_model():
    """x → h = Dense(6, relu) → o1;  x → o2 (a branch bypassing h);  output = o1 + o2."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x_in")
    h = keras.layers.Dense(D, activation="relu", name="h")(inp)
    o1 = keras.layers.Dense(3, name="o1")(h)
    o2 = keras.layers.Dense(3, name="o2")(inp)
    return keras.Model(inp, keras.layers.Add(name="out")([o1, o2]))


def test_interpolate_runs_the_rest_of_the_model(skip_model):
    model = skip_model
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N_SAMPLES, 4)).astype(np.float32)
    h = keras.ops.convert_to_numpy(model.get_layer("h")(x))
    values = h[:, None, :]
    cube = _cube(values)
    f = _trained(D, values, seed=5)
    a, b = cube.isel(sample=slice(0, 6)), cube.isel(sample=slice(6, 12))
    x_a = x[:6]
    res = interpolate(f, a, b, factor="a", steps=3, model=model, x=x_a[:, None, :])
    assert isinstance(res, xr.Dataset)
    assert res["prediction"].dims == ("step", "sample", "transformation", "output")
    assert res["activation"].dims == ("step", "sample", "transformation", "unit")
    assert res.attrs["layer"] == "h"
    o1, o2 = model.get_layer("o1"), model.get_layer("o2")

    def tail(act, inputs):
        return keras.ops.convert_to_numpy(o1(act) + o2(inputs))

    act = res["activation"].values[:, :, 0]
    pred = res["prediction"].values[:, :, 0]
    expected_a = keras.ops.convert_to_numpy(model(x_a))
    np.testing.assert_allclose(pred[0], expected_a, rtol=1e-5, atol=1e-5)  # α = 0: model(x)
    for s in range(3):
        np.testing.assert_allclose(pred[s], tail(act[s], x_a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(act[0], a.values[:, 0], atol=1e-5)
    # without x the bypassing branch o2 sees zeros (documented)
    res0 = interpolate(f, a, b, factor="a", steps=3, model=model)
    zeros = np.zeros_like(x_a)
    np.testing.assert_allclose(res0["prediction"].values[2, :, 0], tail(act[2], zeros), atol=1e-5)
    assert res0.attrs["bypass_inputs"] == "zeros"
    with pytest.raises(ValueError, match=r"^x"):
        interpolate(f, a, b, factor="a", steps=2, model=model, x=x[:5])


def test_interpolate_with_a_model_checks_the_flow_layer(skip_model, cube):
    f = _trained(D, cube.values, seed=6)
    cube = cube.drop_vars(["layer", "channel", "y", "x"])
    f.unit_coords = {"layer": ["h"] * 3 + ["o1"] * 3, "channel": [0, 1, 2] * 2}
    with pytest.raises(ValueError, match=r"^model.*2 layers"):
        interpolate(f, cube, cube, factor="a", model=skip_model)
    f.unit_coords = {"channel": list(range(D))}
    with pytest.raises(ValueError, match=r"^model.*'layer'"):
        interpolate(f, cube, cube, factor="a", model=skip_model)
    f.unit_coords = {"layer": ["o1"] * D}
    with pytest.raises(ValueError, match=r"^model.*o1"):  # 3 units, not 6
        interpolate(f, cube, cube, factor="a", model=skip_model)


# -- eager and compiled paths ----------------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["eager", "compiled"])
def compiled(request):
    """Small jobs run eagerly, large ones compiled: compile= forces either."""
    return request.param


def _traces(caplog, direction=""):
    """The DEBUG records of the "tmx" logger for traces of a compiled flow (one per trace)."""
    prefix = f"flows: tracing {direction}"
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tmx" and r.levelno == logging.DEBUG and r.getMessage().startswith(prefix)
    ]


def _direct_inverse(f, values):
    rows = values.reshape(-1, values.shape[-1])
    return keras.ops.convert_to_numpy(f.inverse(rows)[0]).reshape(values.shape)


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_transform_and_inverse_equal_the_direct_call(compiled, coupling, cube, caplog):
    f = _trained(D, cube.values, coupling=coupling, seed=7)
    expected = _direct(f, cube.values)
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        # numpy, a short last call
        z = transform(f, cube.values.reshape(-1, D), batch_size=5, compile=compiled)
        np.testing.assert_allclose(z.values, expected.reshape(-1, D), rtol=1e-5, atol=1e-5)
        back_expected = _direct_inverse(f, expected)
        back = inverse(f, expected.reshape(-1, D), batch_size=16, compile=compiled)
        np.testing.assert_allclose(back.values, back_expected.reshape(-1, D), rtol=1e-5, atol=1e-5)
        # dask, uneven chunks along every axis (the unit axis is gathered into one chunk)
        lazy = _chunked(cube, ((5, 7), (1, 2), (4, 2)))
        zl = transform(f, lazy, batch_size=4, compile=compiled)
        assert zl.chunks is not None
        np.testing.assert_allclose(zl.values, expected, rtol=1e-5, atol=1e-5)
        zd = zl.copy(data=da.from_array(expected, chunks=((3, 9), (2, 1), (6,))))
        np.testing.assert_allclose(
            inverse(f, zd, batch_size=8, compile=compiled).values,
            back_expected,
            rtol=1e-5,
            atol=1e-5,
        )
    # the forced path ran: one trace per (direction, call shape) when compiled, none when eager;
    # call shapes: batch_size rows, or the power of two >= a block's rows when fewer
    forward = sorted(_traces(caplog, "forward"))
    inverse_ = sorted(_traces(caplog, "inverse"))
    if compiled:
        # numpy: 36 rows in calls of 5; dask blocks of 5, 10, 7, 14 rows in calls of 4
        assert forward == sorted(
            f"flows: tracing forward for shape ({n}, {D}) (float32)" for n in (5, 4)
        )
        # numpy: calls of 16; dask blocks of 6, 3, 18, 9 rows: calls of 8 and of 4
        assert inverse_ == sorted(
            f"flows: tracing inverse for shape ({n}, {D}) (float32)" for n in (16, 8, 4)
        )
    else:
        assert forward == inverse_ == []


def test_a_repeat_call_does_not_recompile(cube, caplog):
    f = _trained(D, cube.values, seed=8)
    rows = f"({1 << (N_SAMPLES * N_TRANSFORMATIONS - 1).bit_length()}, {D})"  # 36 rows: 64
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        z = transform(f, cube, compile=True)
        # one (flow, direction, shape): one trace
        assert _traces(caplog) == [f"flows: tracing forward for shape {rows} (float32)"]
        for _ in range(3):
            np.testing.assert_array_equal(transform(f, cube, compile=True).values, z.values)
            lazy = _chunked(cube, (12, 3, 6))
            np.testing.assert_array_equal(transform(f, lazy, compile=True).values, z.values)
        assert len(_traces(caplog, "forward")) == 1
        back = inverse(f, z, compile=True)
        for _ in range(3):
            np.testing.assert_array_equal(inverse(f, z, compile=True).values, back.values)
        assert _traces(caplog, "inverse") == [f"flows: tracing inverse for shape {rows} (float32)"]
        g = _trained(D, cube.values, seed=8)  # another flow object: its own compile
        transform(g, cube, compile=True)
        assert len(_traces(caplog, "forward")) == 2
    # the compiled path computes the eager one's numbers (up to float rounding)
    np.testing.assert_allclose(
        transform(f, cube, compile=False).values, z.values, rtol=1e-5, atol=1e-5
    )


def test_small_jobs_run_eagerly_and_never_trace(cube, caplog):
    f = _trained(D, cube.values, seed=9)
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        inverse(f, transform(f, cube))
        swap(f, cube, cube, factor="a")
        interpolate(f, cube, cube, factor="a", steps=2)
    assert _traces(caplog) == []


def test_swap_and_interpolate_take_compile(cube, caplog):
    f = _trained(D, cube.values, seed=10)
    a, b = cube.isel(transformation=0), cube.isel(transformation=1)
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        eager = swap(f, a, b, factor="a", compile=False)
        walk_eager = interpolate(f, a, b, factor="a", steps=3, compile=False)
        assert _traces(caplog) == []
        forced = swap(f, a, b, factor="a", compile=True)
        # T(a) and T(b) share the forward trace (same shape); T⁻¹ has its own
        assert sorted(_traces(caplog)) == [
            f"flows: tracing {d} for shape (16, {D}) (float32)" for d in ("forward", "inverse")
        ]
        walk = interpolate(f, a, b, factor="a", steps=3, compile=True)
        # T(a), T(b) reuse the (16, D) trace; T⁻¹ of 3 steps × 12 rows: a new (64, D) one
        assert _traces(caplog)[2:] == [f"flows: tracing inverse for shape (64, {D}) (float32)"]
    np.testing.assert_allclose(forced.values, eager.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(walk.values, walk_eager.values, rtol=1e-5, atol=1e-5)
    for call in (
        lambda: transform(f, cube, compile=1),
        lambda: inverse(f, transform(f, cube), compile="yes"),
        lambda: swap(f, a, b, factor="a", compile=0),
        lambda: interpolate(f, a, b, factor="a", compile=np.array([True])),
    ):
        with pytest.raises(ValueError, match=r"^compile must be True or False; got "):
            call()


# the units' working order inside transform/inverse: every structure gives the direct call
class Negate(keras.layers.Layer):
    """A layer of a type transform does not know: called as it is, in the units' own order."""

    def call(self, x):
        return -x, keras.ops.zeros_like(x[:, 0])

    def inverse(self, y):
        return -y, keras.ops.zeros_like(y[:, 0])


def _structures():
    d = 7  # odd: halves of unequal size
    out = {
        kind: flow(d, blocks=2, hidden=(8,), permutation=kind, coupling=c, seed=3)
        for kind, c in (
            ("checkerboard", "affine"),
            ("heaviside", "additive"),
            ("reverse", "affine"),
            ("shuffle", "affine"),
        )
    }
    out["gyoza preset"] = flow(d, preset="gyoza", seed=3)
    inner = flow(d, blocks=1, hidden=(8,), permutation="shuffle", seed=4)
    outer = flow(d, blocks=1, hidden=(8,), permutation="reverse", seed=5)
    out["nested, a foreign layer"] = Flow([*outer.flow_layers[:3], Negate(), inner])
    return out


@pytest.mark.parametrize("name", list(_structures()))
@pytest.mark.parametrize("compile_", [False, True])
def test_any_structure_transforms_like_the_direct_call(name, compile_):
    f = _structures()[name]
    x = np.random.default_rng(1).normal(0.5, 2.0, (40, 7)).astype(np.float32)
    f(x)  # builds; data-initialised ActNorm and Standardize see a batch
    perturb(f, 2, 0.3)
    # equal to float32 rounding of values of scale ~2 through a perturbed flow
    z = transform(f, x, compile=compile_).values
    np.testing.assert_allclose(z, keras.ops.convert_to_numpy(f(x)[0]), rtol=1e-5, atol=5e-5)
    back = inverse(f, z, compile=compile_).values
    np.testing.assert_allclose(
        back, keras.ops.convert_to_numpy(f.inverse(z)[0]), rtol=1e-5, atol=5e-5
    )
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-4)
