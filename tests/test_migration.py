"""The migration pages (docs/migration/*.md): every row of their tables is checked by a test.

Each table whose last column is "checked by" names, in every row, one or more tests as
``test_file.py::test_name``. ``test_every_row_names_a_test_that_exists`` imports each named
module and checks that the function exists, so a renamed or deleted test breaks the page. The
rows that no other test checked are checked here (the ``test_migration.py::...`` names), each
against an independent computation of the peer's definition in numpy or TensorFlow, written
from the peers' documented semantics (docs/measures.md, docs/attribution.md, the design notes),
not from their code.

The last test checks the tutorials' figures: every image a tutorial shows is in
``docs/tutorials/img/<page>/`` and is written by that page's own code (``savefig("<file>")``), so
``docs/_gen/tutorial_figures.py`` can regenerate it.
"""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import xarray as xr

import tmx
from tmx import attribution as A
from tmx import transforms as T

ROOT = Path(__file__).resolve().parents[1]
MIGRATION = ROOT / "docs" / "migration"
TUTORIALS = ROOT / "docs" / "tutorials"
PAGES = ["tmeasures", "seed_package", "dnikit", "captum_trulens", "gyoza"]

_REF = re.compile(r"`(?:tests/)?(?P<module>test_\w+)\.py::(?P<name>\w+)(?:\[[^\]`]*\])?`")


# -- the pages' tables --------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row (``|`` inside backticks or escaped does not split)."""
    cells, cell, code, prev = [], "", False, ""
    for ch in line.strip().strip("|"):
        if ch == "`":
            code = not code
        escaped, prev = prev == "\\", ch
        if ch == "|" and not code and not escaped:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
    cells.append(cell.strip())
    return cells


def checked_rows(page: str) -> list[tuple[int, str, list[tuple[str, str]]]]:
    """``(line, first cell, [(module, test)])`` for every row of every "checked by" table."""
    lines = (MIGRATION / f"{page}.md").read_text(encoding="utf-8").splitlines()
    rows = []
    k = 0
    while k < len(lines):
        if lines[k].startswith("|") and k + 1 < len(lines) and set(lines[k + 1]) <= set("|-: "):
            header = _cells(lines[k])
            checked = header[-1].lower() == "checked by"
            k += 2
            while k < len(lines) and lines[k].startswith("|"):
                if checked:
                    cells = _cells(lines[k])
                    assert len(cells) == len(header), f"{page}.md:{k + 1}: {len(cells)} cells"
                    refs = [(m["module"], m["name"]) for m in _REF.finditer(cells[-1])]
                    rows.append((k + 1, cells[0], refs))
                k += 1
        else:
            k += 1
    return rows


@pytest.mark.parametrize("page", PAGES)
def test_every_row_names_a_test_that_exists(page):
    rows = checked_rows(page)
    assert len(rows) >= 8, f"{page}.md: expected its migration table"
    for line, first, refs in rows:
        assert refs, f"docs/migration/{page}.md:{line} ({first}) names no test"
        for module, name in refs:
            mod = importlib.import_module(f"tests.{module}")
            assert callable(getattr(mod, name, None)), (
                f"docs/migration/{page}.md:{line} names tests/{module}.py::{name}, which does "
                "not exist (renamed? update the page)"
            )


def test_the_parser_reads_rows_and_references():
    assert _cells("| `a | b` | c |") == ["`a | b`", "c"]
    assert _cells(r"| log\|det J\| | c |") == [r"log\|det J\|", "c"]
    refs = [(m["module"], m["name"]) for m in _REF.finditer("`test_x.py::test_y[p-q]`, `z`")]
    assert refs == [("test_x", "test_y")]


# -- cubes written out by hand -------------------------------------------------------------------
def hand_cube(layers: dict[str, np.ndarray]) -> xr.DataArray:
    """A cube from per-layer arrays (N, T, C) or (N, T, H, W, C), units in (y, x, c) order,
    built with xarray only (the cube contract of docs/guide/concepts.md)."""
    values, layer, channel, ys, xs = [], [], [], [], []
    for name, a in layers.items():
        n, t = a.shape[:2]
        if a.ndim == 3:
            c = a.shape[2]
            yy, xx, cc = np.full(c, -1), np.full(c, -1), np.arange(c)
        else:
            h, w, c = a.shape[2:]
            yy, xx, cc = (g.ravel() for g in np.meshgrid(*map(np.arange, (h, w, c)), indexing="ij"))
        values.append(a.reshape(n, t, -1))
        layer += [name] * len(cc)
        channel.append(cc), ys.append(yy), xs.append(xx)
    data = np.concatenate(values, axis=2)
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords={
            "sample": np.arange(data.shape[0]),
            "transformation": np.arange(data.shape[1]),
            "unit": np.arange(data.shape[2]),
            "layer": ("unit", np.array(layer)),
            "channel": ("unit", np.concatenate(channel)),
            "y": ("unit", np.concatenate(ys)),
            "x": ("unit", np.concatenate(xs)),
        },
        name="activation",
    )


def _random_layers(seed: int = 0, n: int = 7, t: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, t, 4))
    dense[:, :, 1] = rng.normal(size=(n, 1))  # invariant: depends on the sample only
    return {"conv": rng.normal(size=(n, t, 2, 3, 2)) + 0.3, "dense": dense}


# -- tmeasures -----------------------------------------------------------------------------------
def test_tmeasures_transformation_and_sample_variance():
    """tmeasures' TransformationVarianceInvariance: per sample the std (ddof 1) over the
    transformations, averaged over samples; SampleVarianceInvariance: per transformation the std
    over samples, averaged over transformations."""
    layers = _random_layers()
    cube = hand_cube(layers)
    a = cube.values
    n, t, u = a.shape
    tv = np.array([np.mean([np.std(a[i, :, k], ddof=1) for i in range(n)]) for k in range(u)])
    sv = np.array([np.mean([np.std(a[:, j, k], ddof=1) for j in range(t)]) for k in range(u)])
    np.testing.assert_allclose(tmx.transformation_variance(cube), tv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tmx.sample_variance(cube), sv, rtol=1e-12)
    np.testing.assert_allclose(tmx.normalized_variance(cube), tv / sv, rtol=1e-12, atol=1e-12)
    dense_invariant = int(np.flatnonzero(cube.layer.values == "dense")[1])
    assert tv[dense_invariant] < 1e-12 and tmx.normalized_variance(cube)[dense_invariant] < 1e-12


def test_tmeasures_distance_family_over_all_pairs():
    """TD: per sample the mean |a_ij − a_ik| over every pair of transformations, averaged over
    samples; SD: per transformation the mean over every pair of samples; ND = TD / SD. All pairs,
    which is tmeasures' number for one batch holding the whole data set."""
    cube = hand_cube(_random_layers(1))
    a = cube.values
    n, t, u = a.shape

    def mean_pairs(v):  # mean distance over unordered pairs of distinct rows
        return np.mean([abs(p - q) for p, q in itertools.combinations(v, 2)])

    td = np.array([np.mean([mean_pairs(a[i, :, k]) for i in range(n)]) for k in range(u)])
    sd = np.array([np.mean([mean_pairs(a[:, j, k]) for j in range(t)]) for k in range(u)])
    np.testing.assert_allclose(tmx.transformation_distance(cube), td, rtol=1e-10)
    np.testing.assert_allclose(tmx.sample_distance(cube), sd, rtol=1e-10)
    np.testing.assert_allclose(tmx.normalized_distance(cube), td / sd, rtol=1e-10)


@pytest.fixture(scope="module")
def quarter_turn_cube():
    """A cube of a tiny CNN under the four quarter turns: `pointwise` (a 1 × 1 convolution,
    exactly equivariant to rot90), `conv` (3 × 3, not equivariant) and `dense`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 1, activation="tanh", name="pointwise"),
            keras.layers.Conv2D(2, 3, padding="same", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(3, name="dense"),
        ]
    )
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 1)).astype("float32")
    cube = tmx.activations(model, x, T.rot90([0, 1, 2, 3]), progress=False).compute()
    return cube


def _inverted_by_hand(cube: xr.DataArray, layer: str) -> np.ndarray:
    """(N, T, H, W, C) float64: each feature map turned back by np.rot90(·, −k)."""
    sel = cube.sel(unit=cube.layer == layer)
    h, w, c = (int(sel[d].max()) + 1 for d in ("y", "x", "channel"))
    maps = sel.values.astype(np.float64).reshape(sel.sizes["sample"], -1, h, w, c)
    return np.stack([np.rot90(maps[:, k], -k, axes=(1, 2)) for k in range(maps.shape[1])], 1)


def test_same_equivariance_is_a_measure_of_the_inverted_cube(quarter_turn_cube):
    """tmeasures' *SameEquivariance measures (and the seed's SameEquivariance and
    NormalizedSameEquivariance) are the invariance measures of the feature maps mapped back by
    the inverse transformation; tmx composes them: ``measure(tmx.invert(cube))``."""
    cube = quarter_turn_cube
    back = tmx.invert(cube)
    assert set(back.layer.values) == {"pointwise", "conv"}  # dense and flatten dropped
    for layer in ("pointwise", "conv"):
        b = _inverted_by_hand(cube, layer)
        n, t = b.shape[:2]
        flat = b.reshape(n, t, -1)
        mine = back.sel(unit=back.layer == layer)
        np.testing.assert_allclose(mine.values, flat, rtol=1e-6, atol=1e-6)
        # tmeasures: NormalizedVarianceSameEquivariance, NormalizedDistanceSameEquivariance
        tv = np.std(flat, axis=1, ddof=1).mean(0)
        sv = np.std(flat, axis=0, ddof=1).mean(0)
        nvse = tmx.normalized_variance(back).sel(unit=back.layer == layer)
        np.testing.assert_allclose(
            nvse, np.where(sv > 0, tv / np.where(sv > 0, sv, 1), 1.0), rtol=1e-5, atol=1e-6
        )
        td = np.mean(
            [np.abs(flat[:, j] - flat[:, k]) for j, k in itertools.combinations(range(t), 2)], 0
        ).mean(0)
        ndse = tmx.transformation_distance(back).sel(unit=back.layer == layer)
        np.testing.assert_allclose(ndse, td, rtol=1e-5, atol=1e-6)
        # the seed: SameEquivariance = per layer the mean TV (dispersion "var") of the maps
        seed_se = np.var(flat, axis=1, ddof=1).mean(0).mean()
        per_layer = tmx.by_layer(tmx.transformation_variance(back, dispersion="var"))
        np.testing.assert_allclose(float(per_layer.sel(layer=layer)), seed_se, rtol=1e-5)
        # the seed: NormalizedSameEquivariance = mean over channels of the per-feature ratio
        # mean_(y,x) TV / mean_(y,x) SV, with D = variance
        tv_c = np.var(b, axis=1, ddof=1).mean(0).mean((0, 1))
        sv_c = np.var(b, axis=0, ddof=1).mean(0).mean((0, 1))
        nse = tmx.normalized_variance(back, dispersion="var", zero_div="nan", pool="mean")
        np.testing.assert_allclose(
            float(tmx.by_layer(nse).sel(layer=layer)), np.mean(tv_c / sv_c), rtol=1e-5
        )
    # the 1 × 1 convolution is exactly equivariant: its maps, turned back, do not vary
    pointwise = tmx.by_layer(tmx.normalized_variance(back)).sel(layer="pointwise")
    assert float(pointwise) < 1e-5
    assert float(tmx.by_layer(tmx.normalized_variance(cube)).sel(layer="pointwise")) > 0.1


# -- Captum and TruLens --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)]
    )
    x = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    return model, x


def _gradient(model, x, qoi) -> np.ndarray:
    """d qoi(model(x)) / dx per sample, by TensorFlow's GradientTape (float64 result)."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        q = qoi(model(xt))
    return tape.gradient(q, xt).numpy().astype(np.float64)


def test_captum_saliency_and_input_x_gradient(mlp):
    """Captum ``Saliency(m).attribute(x, target=c)``: |∂y_c/∂x| (``abs=True``, its default);
    ``InputXGradient``: x ⊙ ∂y_c/∂x."""
    model, x = mlp
    g = _gradient(model, x, lambda y: tf.reduce_sum(y[:, 2]))
    np.testing.assert_allclose(
        A.saliency(model, x, 2).values.reshape(g.shape), np.abs(g), rtol=1e-5, atol=1e-6
    )
    signed = A.saliency(model, x, 2, absolute=False).values.reshape(g.shape)
    np.testing.assert_allclose(signed, g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        A.input_x_gradient(model, x, 2).values.reshape(g.shape), x * g, rtol=1e-5, atol=1e-6
    )


def test_trulens_input_attribution_and_its_quantities_of_interest(mlp):
    """TruLens ``InputAttribution(m, qoi)`` (point DoI, multiplied by the input by default):
    ``ClassQoI(c)`` → ``qoi=c``; ``ComparativeQoI(c1, c2)`` → ``qoi=(c1, c2)``, the gradient of
    y_c1 − y_c2; a function of the output → ``qoi=callable``; ``MaxClassQoI()`` → ``"max"`` (the
    class largest at x); ``multiply_activation=False`` → the plain gradient."""
    model, x = mlp
    g = [_gradient(model, x, lambda y, c=c: tf.reduce_sum(y[:, c])) for c in range(3)]

    def attr(**kw):
        return A.attribute(model, x, **kw).values.reshape(x.shape)

    np.testing.assert_allclose(attr(qoi=1), x * g[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attr(qoi=(0, 2)), x * (g[0] - g[2]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        attr(qoi=lambda y: y[:, 0] + 2 * y[:, 1]), x * (g[0] + 2 * g[1]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(attr(qoi=1, multiply_activation=False), g[1], rtol=1e-5, atol=1e-6)
    top = np.argmax(model(x).numpy(), axis=1)
    expected = x * np.stack([g[c][i] for i, c in enumerate(top)])
    np.testing.assert_allclose(attr(qoi="max"), expected, rtol=1e-5, atol=1e-6)


# -- the tutorials' figures ----------------------------------------------------------------------
_IMAGE = re.compile(r"!\[[^\]]*\]\(img/(?P<page>[\w-]+)/(?P<file>[\w.-]+\.png)\)")


def test_tutorial_figures_exist_and_are_drawn_by_their_page():
    pages = sorted(TUTORIALS.glob("*.md"))
    assert {p.stem for p in pages} >= {
        "measures",
        "out_of_core",
        "introspection",
        "attribution",
        "flows",
    }
    for page in pages:
        text = page.read_text(encoding="utf-8")
        shown = [(m["page"], m["file"]) for m in _IMAGE.finditer(text)]
        assert shown, f"{page.name} shows no figure"
        for folder, file in shown:
            assert folder == page.stem, f"{page.name} shows another page's figure {file}"
            assert (TUTORIALS / "img" / folder / file).is_file(), (
                f"docs/tutorials/img/{folder}/{file} is missing: run "
                "`.venv/bin/python docs/_gen/tutorial_figures.py` (or `make docs`)"
            )
            assert f'savefig("{file}"' in text, f"{page.name} does not write {file}"
