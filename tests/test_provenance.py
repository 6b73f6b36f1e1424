"""One attr encoding for every result (issue 18, item 2) and the shared argument checks.

The encoding (docs/guide/conventions.md, "Results"): numbers and strings as they are,
booleans as 0/1, None as "None", lists as lists; every result carries ``tmx_version``."""

from __future__ import annotations

import numbers
import pickle
import re

import numpy as np
import pytest
import xarray as xr

import tmx
from tmx import __version__, flows, introspect
from tmx import attribution as A

RNG = np.random.default_rng(0)


# The helpers' own behaviour (tmx._provenance's encoding, tmx._validate's checks) is shown by
# their doctests (run by --doctest-modules); this file checks it through public functions only.


# -- the measures' choices: the shared check (bools and unhashables refused, exact strings) ------
def test_measures_refuse_bools_unhashables_and_other_cases(cube):
    cases = [
        # True == 1 would match the option 1 without the shared check's bool test
        (lambda: tmx.goodfellow(cube, sign=True), r"^sign must be one of \[1, -1\]; got True$"),
        (lambda: tmx.goodfellow(cube, sign=np.bool_(False)), r"^sign must be one of \[1, -1\]"),
        (
            lambda: tmx.normalized_distance(cube, per=["channel"]),
            r"^per must be one of \['unit', 'channel'\]; got \['channel'\]$",
        ),
        (
            lambda: tmx.normalized_distance(cube, per=np.array(["unit", "channel"])),
            r"^per must be one of \['unit', 'channel'\]; got array\(",
        ),
        (
            lambda: tmx.bootstrap(tmx.normalized_variance, cube, method="JACKKNIFE"),
            r"^method must be one of \['jackknife', 'bc', 'percentile'\]; got 'JACKKNIFE'$",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # a numpy integer is a valid choice, and gives the same numbers as the Python one
    xr.testing.assert_identical(
        tmx.goodfellow(cube, sign=np.int64(-1), reference=0),
        tmx.goodfellow(cube, sign=-1, reference=0),
    )


# -- results of public functions ----------------------------------------------------------------
def _plain(value) -> bool:
    """A value netCDF and Zarr store as it is: str, int, float (never bool or None), or a
    list of those."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (str, int, float)


def _check_attrs(attrs: dict, key: str, name: str) -> None:
    assert attrs["tmx_version"] == __version__
    assert attrs[key] == name
    bad = {k: v for k, v in attrs.items() if not _plain(v)}
    assert not bad, f"attrs not in the one encoding: {bad}"


@pytest.fixture(scope="module")
def cube() -> xr.DataArray:
    conv = RNG.normal(size=(6, 3, 2, 2, 2))
    dense = RNG.normal(size=(6, 3, 3))
    return tmx.from_array(
        {"conv": conv, "dense": dense},
        attrs={"model_name": "toy", "fitted": True, "note": None, "sizes": (np.int64(2), 3)},
    )


def test_from_array_encodes_its_attrs(cube):
    assert cube.attrs["tmx_version"] == __version__
    assert cube.attrs["fitted"] == 1 and cube.attrs["note"] == "None"
    assert cube.attrs["sizes"] == [2, 3] and cube.attrs["layers"] == ["conv", "dense"]
    assert all(_plain(v) for v in cube.attrs.values())


def test_measures_record_none_and_bools_one_way(cube):
    nv = tmx.normalized_variance(cube)
    _check_attrs(nv.attrs, "measure", "normalized_variance")
    assert nv.attrs["by"] == "None" and nv.attrs["pool"] == "None"
    assert nv.attrs["bias_correction"] == "None" and nv.attrs["cube_model_name"] == "toy"
    assert nv.attrs["n_samples"] == 6 and nv.attrs["n_transformations"] == 3
    assert next(iter(nv.attrs)) == "measure"  # the function first, then its options
    # of the cube's attrs only the model and the transformations are copied (not fitted, note...)
    assert {k for k in nv.attrs if k.startswith("cube_")} == {"cube_model_name"}
    nd = tmx.normalized_distance(cube, per="channel", normalize=True)
    _check_attrs(nd.attrs, "measure", "normalized_distance")
    assert nd.attrs["normalize"] == 1 and nd.attrs["per"] == "channel"
    g = tmx.goodfellow(cube, reference=0)
    _check_attrs(g.attrs, "measure", "goodfellow")
    assert g.attrs["top"] == "None" and g.attrs["reference"] == [0]


def test_results_survive_netcdf(cube, tmp_path):
    """Every attr value writes to netCDF (which has no bool or None) and reads back equal."""
    nv = tmx.normalized_variance(cube, parts=True)
    nv = nv.drop_vars([k for k, c in nv.coords.items() if c.dtype == bool])
    path = tmp_path / "nv.nc"
    nv.to_netcdf(path, engine="scipy")
    with xr.open_dataset(path, engine="scipy") as back:
        for key, value in nv.attrs.items():
            got = back.attrs[key]
            got = got.tolist() if isinstance(got, np.ndarray) else got
            assert got == value, key


def test_introspectors_carry_their_name_and_version():
    x = np.abs(RNG.normal(size=(12, 4)))
    x[:, 0] = 0.0
    responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", list("hhgg"))})
    iua = introspect.iua(responses)
    _check_attrs(iua.attrs, "introspector", "iua")
    stats = introspect.pfa(responses, eigenvectors=False)
    _check_attrs(stats.attrs, "introspector", "pfa")
    assert stats.attrs["eigenvectors"] == 0
    recipe = introspect.pfa_recipe(stats, "energy", energy=0.9)
    _check_attrs(recipe.attrs, "introspector", "pfa_recipe")
    assert recipe.attrs["size"] == "None"
    dup = introspect.duplicates(responses, seed=None)
    _check_attrs(dup.attrs, "introspector", "duplicates")
    assert dup.attrs["seed"] == "None" and dup.attrs["normalize"] == 1
    proj = introspect.reduce(responses, "pca", 2, seed=None, whiten=True)
    _check_attrs(proj.attrs, "introspector", "reduce")
    assert proj.attrs["method"] == "pca" and proj.attrs["whiten"] == 1
    assert proj.attrs["seed"] == "None"
    with pytest.raises(ValueError, match="seed must be a non-negative integer or None"):
        introspect.duplicates(responses, seed=True)


def test_flows_diagnostics_carry_their_name_and_version():
    angle = RNG.normal(size=30)
    z = xr.DataArray(
        np.column_stack([RNG.normal(size=30), 2.0 * angle]),
        dims=("sample", "latent"),
        coords={"factor": ("latent", ["residual", "angle"]), "angle": ("sample", angle)},
    )
    r2 = flows.disentanglement(z, "angle", seed=np.int64(1))
    _check_attrs(r2.attrs, "function", "flows.disentanglement")
    assert r2.attrs["seed"] == 1
    with pytest.raises(ValueError, match=r"test_size must be a number in \(0, 1\)"):
        flows.disentanglement(z, "angle", test_size=True)
    cube = xr.DataArray(
        RNG.normal(size=(8, 3, 2)),
        dims=("sample", "transformation", "unit"),
        coords={"layer": ("unit", ["h", "h"])},
    )
    dims = flows.factor_dimensions(flows.pairs(cube, ("sample", "transformation"), n=10, seed=0))
    _check_attrs(dims.attrs, "function", "flows.factor_dimensions")
    f = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    x = RNG.normal(size=(4, 2)).astype("float32")
    f(x)  # the first batch initialises the data-initialised layers
    checked = flows.check(f, x)
    _check_attrs(checked.attrs, "function", "flows.check")
    assert checked.attrs["logdet_checked"] == 1


def test_attribution_results_carry_their_name_and_version():
    model = tmx.models.small_cnn((8, 8, 1), seed=0)
    x = RNG.normal(size=(2, 8, 8, 1)).astype("float32")
    sal = A.saliency(model, x, 3, absolute=False)
    assert sal.attrs["method"] == "saliency" and sal.attrs["absolute"] == 0
    assert sal.attrs["tmx_version"] == __version__
    guided = A.guided_backprop(model, x, 3)
    _check_attrs(guided.attrs, "method", "guided_backprop")
    full = A.full_grad(model, x, 3, return_delta=True)
    _check_attrs(full.attrs, "method", "full_grad")
    assert full.attrs["fold"] == 1 and full.attrs["normalize"] == 1
    curve = A.deletion(model, x, guided, 3, steps=2)
    _check_attrs(curve.attrs, "metric", "deletion")
    with pytest.raises(ValueError, match="absolute must be True or False; got 1"):
        A.saliency(model, x, 3, absolute=1)


def test_encoded_attrs_pickle_and_compare_equal(cube):
    """No numpy scalar sneaks in: attrs compare equal after a round trip through pickle."""
    nv = tmx.normalized_variance(cube, by=None)
    assert pickle.loads(pickle.dumps(nv.attrs)) == nv.attrs
    assert all(not isinstance(v, np.generic) for v in nv.attrs.values())
    assert isinstance(nv.attrs["n_samples"], numbers.Integral)


# -- results converted in the second pass: reductions, bootstrap, evaluate and analyze,
# -- attribution, flows.pairs, the digits --------------------------------------------------------
def _netcdf3(value) -> bool:
    """What netCDF3 (scipy's writer, the only netCDF engine installed here) holds: a number, a
    string, or a flat list of numbers; a list of strings needs netCDF4 and goes to Zarr only."""
    if isinstance(value, list):
        return bool(value) and all(type(v) in (int, float) for v in value)
    return type(value) in (str, int, float)


def _same(got, want) -> bool:
    got = got.tolist() if isinstance(got, np.ndarray) else got
    if isinstance(want, list):
        got = got if isinstance(got, list) else [got]  # a length-1 netCDF list reads as a scalar
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float) and np.isnan(want):
        return np.isnan(got)
    return got == want


def _round_trip(attrs: dict, path) -> None:
    """Every attr reads back equal from Zarr, and from netCDF where netCDF3 can hold it."""
    ds = xr.Dataset({"v": ("i", np.zeros(1))}, attrs=attrs)
    ds.to_zarr(path.with_suffix(".zarr"), mode="w", consolidated=False)
    with xr.open_zarr(path.with_suffix(".zarr"), consolidated=False) as back:
        assert all(_same(back.attrs[k], v) for k, v in attrs.items()), back.attrs
    flat = {k: v for k, v in attrs.items() if _netcdf3(v)}
    xr.Dataset({"v": ("i", np.zeros(1))}, attrs=flat).to_netcdf(path, engine="scipy")
    with xr.open_dataset(path, engine="scipy") as back:
        bad = {k: (back.attrs[k], v) for k, v in flat.items() if not _same(back.attrs[k], v)}
        assert not bad, bad


def test_reductions_record_finite_only_as_0_or_1(cube, tmp_path):
    nv = tmx.normalized_variance(cube)
    per_layer = tmx.by_layer(nv)
    _check_attrs(per_layer.attrs, "measure", "normalized_variance")
    assert per_layer.attrs["finite_only"] == 1 and per_layer.attrs["reduce"] == "mean"
    assert tmx.by_layer(nv, finite_only=False).attrs["finite_only"] == 0
    per_channel = tmx.by_channel(nv, finite_only=np.bool_(True))
    _check_attrs(per_channel.attrs, "measure", "normalized_variance")
    assert per_channel.attrs["finite_only"] == 1
    parts = tmx.normalized_variance(cube, parts=True)
    ratio = tmx.by_layer(parts, reduce="ratio_of_means")
    _check_attrs(ratio.attrs, "measure", "normalized_variance")
    assert ratio.attrs["zero_div"] == "tmeasures" and ratio.attrs["finite_only"] == 1
    _check_attrs(tmx.by_layer(parts).attrs, "measure", "normalized_variance")
    # a per-unit result made by hand, without a version, gets the current one
    mine = xr.DataArray(np.arange(4.0), dims="unit", coords={"layer": ("unit", list("aabb"))})
    assert tmx.by_layer(mine).attrs == {
        "reduce": "mean",
        "finite_only": 1,
        "tmx_version": __version__,
    }
    _round_trip(ratio.attrs, tmp_path / "ratio.nc")


def test_bootstrap_convergence_and_invert_attrs(cube, tmp_path):
    boot = tmx.bootstrap(
        tmx.normalized_variance, cube, n=8, method="percentile", reduce="mean", seed=np.int64(3)
    )
    _check_attrs(boot.attrs, "measure", "bootstrap(normalized_variance)")
    assert boot.attrs["seed"] == 3 and boot.attrs["over"] == ["sample", "transformation"]
    jack = tmx.bootstrap(tmx.normalized_variance, cube)  # the jackknife, by unit
    _check_attrs(jack.attrs, "measure", "bootstrap(normalized_variance)")
    assert jack.attrs["reduce"] == "None" and jack.attrs["method"] == "jackknife"
    curve = tmx.convergence(tmx.normalized_variance, cube, sizes=(3, 6), n=8)
    _check_attrs(curve.attrs, "measure", "convergence(normalized_variance)")
    assert curve.attrs["sizes"] == [3, 6]
    _round_trip(curve.attrs, tmp_path / "curve.nc")
    x = RNG.normal(size=(2, 4, 4, 1))
    rot = tmx.transforms.rot90([0, 1])
    maps = np.stack([tmx.transforms.apply(rot, x, j) for j in range(2)], axis=1)
    inverted = tmx.invert(
        tmx.from_array({"maps": maps}, transformation=rot, attrs={"input_shape": (4, 4, 1)})
    )
    _check_attrs(inverted.attrs, "equivariance", "inverted (same-equivariance)")
    assert inverted.attrs["equivariance_input_size"] == [4, 4]
    assert inverted.attrs["equivariance_fill"] == "None"
    _round_trip(inverted.attrs, tmp_path / "inverted.nc")


@pytest.fixture(scope="module")
def classifier():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="dense")]
    )


def test_evaluate_and_analyze_carry_their_name_and_version(classifier, tmp_path):
    x = RNG.random((6, 4, 4, 1)).astype("float32")
    y = np.arange(6) % 3
    flip = tmx.transforms.flip(["none", "x"])
    ev = tmx.evaluate(classifier, x, y, flip)
    _check_attrs(ev.attrs, "function", "evaluate")
    assert ev.attrs["from_logits"] == 1 and ev.attrs["n_samples"] == 6  # decided: logits
    assert tmx.evaluate(classifier, x, y, flip, from_logits=False).attrs["from_logits"] == 0
    res = tmx.analyze(classifier, x, y, {"flip": flip}, layers=["dense"], bias_correction=None)
    _check_attrs(res.attrs, "measure", "normalized_variance")
    assert res.attrs["option_bias_correction"] == "None" and res.attrs["option_parts"] == 1
    assert res.attrs["from_logits"] == "None" and res.attrs["reduce"] == "ratio_of_means"
    _round_trip(res.attrs, tmp_path / "analyze.nc")


def test_attribution_methods_record_their_options(tmp_path):
    import warnings

    model = tmx.models.small_cnn((8, 8, 1), seed=0)
    x = RNG.normal(size=(2, 8, 8, 1)).astype("float32")
    var = A.attribute(
        model, x, qoi=3, doi="gaussian", samples=2, multiply_activation=False, gradients="variance"
    )
    _check_attrs(var.attrs, "method", "attribute")
    assert var.attrs["multiply_activation"] == 0 and var.attrs["gradients"] == "variance"
    assert A.attribute(model, x, qoi=3, steps=2).attrs["gradients"] == "mean"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # smoothgrad passes gradients=
        vargrad = A.smoothgrad(model, x, 3, kind="vargrad", samples=2)
    _check_attrs(vargrad.attrs, "method", "vargrad")
    assert vargrad.attrs["gradients"] == "variance"
    np.testing.assert_array_equal(vargrad.values, var.values)  # the same draws, same numbers
    tunnel = A.noise_tunnel(A.saliency, model, x, 3, samples=2)
    _check_attrs(tunnel.attrs, "method", "noise_tunnel")
    assert tunnel.attrs["absolute"] == "None" and tunnel.attrs["inner_method"] == "saliency"
    assert A.noise_tunnel(A.saliency, model, x, 3, samples=2, absolute=True).attrs["absolute"] == 1
    shap = A.gradient_shap(model, x, 3, baselines=np.zeros((8, 8, 1)), samples=2)
    _check_attrs(shap.attrs, "method", "gradient_shap")
    conductance = A.layer_conductance(model, x, 3, layer=["conv2", "dense"], steps=2)
    _check_attrs(conductance.attrs, "method", "layer_conductance")
    assert conductance.attrs["cut"] == ["conv2", "dense"]
    cam = A.grad_cam(model, x, 3, layer="conv2")
    _check_attrs(cam.attrs, "method", "grad_cam")
    assert cam.attrs["relu"] == 1
    big = A.upsample(cam, (8, 8))
    _check_attrs(big.attrs, "method", "grad_cam")
    assert big.attrs["upsampled"] == "8x8 bilinear"
    _check_attrs(A.score_cam(model, x, 3, layer="conv2").attrs, "method", "score_cam")
    guided = A.guided_grad_cam(model, x, 3, layer="conv2", progress=False)
    _check_attrs(guided.attrs, "method", "guided_grad_cam")
    over = A.over_transforms(A.saliency, model, x, tmx.transforms.rot90([0, 1]))
    _check_attrs(over.attrs, "method", "saliency")
    assert over.attrs["layers"] == ["attribution"] and over.attrs["input_shape"] == [8, 8, 1]
    for name, result in (("var", var), ("tunnel", tunnel), ("conductance", conductance)):
        _round_trip(result.attrs, tmp_path / f"{name}.nc")


def test_guided_grad_cam_progress_shows_both_bars(capfd):
    model = tmx.models.small_cnn((8, 8, 1), seed=0)
    x = RNG.normal(size=(2, 8, 8, 1)).astype("float32")
    quiet = A.guided_grad_cam(model, x, 3, layer="conv2", progress=False, batch_size=1)
    got = capfd.readouterr()
    assert "/batch" not in got.out + got.err
    shown = A.guided_grad_cam(model, x, 3, layer="conv2", progress=True, batch_size=1)
    got = capfd.readouterr()
    text = re.sub(r"\x1b\[[0-9;]*m", "", got.out + got.err)
    # grad_cam's bar over its two gradient calls, then guided backpropagation's
    assert text.count("2/2") == 2 and text.count("/batch") >= 2, text
    np.testing.assert_array_equal(shown.values, quiet.values)
    with pytest.raises(ValueError, match="progress"):
        A.guided_grad_cam(model, x, 3, progress="yes")


def test_pairs_and_digits_carry_their_name_and_version(tmp_path):
    cube = xr.DataArray(
        RNG.normal(size=(8, 3, 2)),
        dims=("sample", "transformation", "unit"),
        coords={"layer": ("unit", ["h", "h"])},
        attrs={"model_name": "toy"},
    )
    pr = flows.pairs(cube, ("sample", "transformation"), n=10, seed=np.int64(2))
    _check_attrs(pr.attrs, "function", "flows.pairs")
    assert pr.attrs["seed"] == 2 and pr.attrs["cube_model_name"] == "toy"
    assert pr.attrs["layer"] == "all" and pr.attrs["pairs_per_factor"] == [5, 5]
    _round_trip(pr.attrs, tmp_path / "pairs.nc")
    digits = tmx.datasets.digits(8).as_dataarray("test")
    _check_attrs(digits.attrs, "source", "sklearn.datasets.load_digits")
    assert digits.attrs["normalize"] == 1 and digits.attrs["test_size"] == 0.25
    _round_trip(digits.attrs, tmp_path / "digits.nc")


# -- the shared checks in the functions that now use them ----------------------------------------
def _calls(cube):
    """(call, message) pairs: each function refusing a bad seed, flag or fraction with the
    shared check's message."""
    nv = tmx.normalized_variance(cube)
    img, heat = RNG.random((4, 4)), RNG.random((2, 2))
    attr = xr.DataArray(RNG.random((1, 4, 4, 1)), dims=("sample", "y", "x", "channel"))
    return [
        # seeds: non-negative integers (negative ones reached numpy's SeedSequence before)
        (lambda: tmx.bootstrap(tmx.normalized_variance, cube, seed=-1), "seed", "-1"),
        (lambda: tmx.convergence(tmx.normalized_variance, cube, sizes=(3,), seed=-1), "seed", "-1"),
        (lambda: tmx.transforms.gaussian_noise(0.1, seed=True), "seed", "True"),
        (lambda: tmx.datasets.digits(8, seed=1.0), "seed", "1.0"),
        (lambda: tmx.cka(cube, seed=-2), "seed", "-2"),
        (lambda: flows.pairs(cube, ("sample",), n=2, seed=-1), "seed", "-1"),
        # flags: True or False, never 0/1
        (lambda: tmx.by_layer(nv, finite_only=1), "finite_only", "1"),
        (lambda: tmx.by_channel(nv, finite_only="yes"), "finite_only", "'yes'"),
        (lambda: tmx.transforms.translation(1, 0, relative=1), "relative", "1"),
        (lambda: tmx.datasets.digits(8, normalize=0), "normalize", "0"),
        # fractions
        (lambda: tmx.anova_invariance(cube, alpha=1.0), "alpha", "1.0"),
        (lambda: tmx.datasets.digits(8, test_size=0), "test_size", "0"),
        (lambda: tmx.plot.overlay(img, heat, alpha=1.5), "alpha", "1.5"),
        (lambda: tmx.plot.attribution(attr, RNG.random((1, 4, 4, 1)), overlay=-0.1), "overlay", ""),
    ]


_MESSAGES = {
    "seed": "must be a non-negative integer; got ",
    "finite_only": "must be True or False; got ",
    "relative": "must be True or False; got ",
    "normalize": "must be True or False; got ",
    "alpha": "must be a number in ",
    "test_size": r"must be a number in \(0, 1\); got ",
    "overlay": r"must be a number in \[0, 1\]; got ",
}


def test_functions_use_the_shared_checks(cube):
    for call, name, shown in _calls(cube):
        with pytest.raises(ValueError, match=rf"^{name} {_MESSAGES[name]}.*{shown}"):
            call()


def test_attribution_uses_the_shared_checks():
    model = tmx.models.small_cnn((8, 8, 1), seed=0)
    x = RNG.normal(size=(1, 8, 8, 1)).astype("float32")
    cases = [
        (lambda: A.attribute(model, x, seed=-1), r"^seed must be a non-negative integer; got -1"),
        (lambda: A.noise_tunnel(A.saliency, model, x, seed=True), "^seed must be a non-neg"),
        (lambda: A.gradient_shap(model, x, baselines=x, seed=-1), "^seed must be a non-neg"),
        (lambda: A.attribute(model, x, multiply_activation=1), "^multiply_activation must be True"),
        (lambda: A.gradient_shap(model, x, baselines=x, return_delta=1), "^return_delta must be"),
        (lambda: A.layer_conductance(model, x, layer="dense", return_delta=0), "^return_delta"),
        (lambda: A.noise_tunnel(A.saliency, model, x, absolute=1), "^absolute must be True or"),
        (lambda: A.grad_cam(model, x, relu="yes"), "^relu must be True or False; got 'yes'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_save_and_activations_use_the_shared_flag(cube, tmp_path, classifier):
    with pytest.raises(ValueError, match=r"^resume must be True or False; got 1"):
        tmx.save(cube, tmp_path / "c.zarr", resume=1)
    x = RNG.random((2, 4, 4, 1)).astype("float32")
    with pytest.raises(ValueError, match=r"^check_finite must be True or False; got 'no'"):
        tmx.activations(classifier, x, check_finite="no")
