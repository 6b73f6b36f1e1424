"""Coupling masks and permutations of ``tmx.flows`` (semantics in ``flows.md``)."""

import itertools

import numpy as np
import pytest

from tmx.flows import inverse_permutation, mask, permutation

SHAPES = [1, 2, 3, 5, 6, 7, 12, (1,), (3, 5), (4, 4), (2, 3), (5, 1), (1, 7), (3, 3), (2, 3, 4),
          (3, 3, 3), (2, 1, 5), (1, 1, 1)]  # fmt: skip


def _rope_reference(shape):
    """The rope walk as flows.md describes it: an odometer whose axes reverse direction."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    index = [0] * len(shape)
    direction = [1] * len(shape)
    cells = [tuple(index)]
    for _ in range(int(np.prod(shape)) - 1):
        for axis in range(len(shape) - 1, -1, -1):
            nxt = index[axis] + direction[axis]
            if 0 <= nxt < shape[axis]:
                index[axis] = nxt
                break
            direction[axis] = -direction[axis]  # this axis reverses; an earlier one advances
        cells.append(tuple(index))
    return [int(np.ravel_multi_index(c, shape)) for c in cells]


def test_flows_md_examples_exactly():
    np.testing.assert_array_equal(
        mask("checkerboard", (3, 5)).reshape(3, 5),
        [[0, 1, 0, 1, 0], [1, 0, 1, 0, 1], [0, 1, 0, 1, 0]],
    )
    np.testing.assert_array_equal(mask("heaviside", 5), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(permutation("heaviside", 5), [2, 3, 4, 0, 1])
    np.testing.assert_array_equal(inverse_permutation(permutation("heaviside", 5)), [3, 4, 0, 1, 2])
    np.testing.assert_array_equal(
        permutation("checkerboard", (3, 5)), [1, 0, 3, 2, 9, 6, 5, 8, 7, 4, 11, 10, 13, 12, 14]
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_masks_every_shape(shape):
    dims = (shape,) if isinstance(shape, int) else shape
    d = int(np.prod(dims))
    for kind in ("checkerboard", "heaviside"):
        m = mask(kind, shape)
        assert m.shape == (d,) and m.dtype == np.int64
        assert set(np.unique(m)) <= {0, 1}
    # checkerboard: parity of the multi-index, origin 0, the extra element of odd D transformed
    m = mask("checkerboard", shape)
    for cell in itertools.product(*(range(n) for n in dims)):
        assert m[np.ravel_multi_index(cell, dims)] == sum(cell) % 2
    assert (m == 0).sum() == (d + 1) // 2
    np.testing.assert_array_equal(mask("heaviside", shape), [0] * (d // 2) + [1] * (d - d // 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_checkerboard_permutation_every_shape(shape):
    dims = (shape,) if isinstance(shape, int) else shape
    d = int(np.prod(dims))
    p = permutation("checkerboard", shape)
    m = mask("checkerboard", shape)
    assert p.dtype == np.int64 and sorted(p.tolist()) == list(range(d))
    np.testing.assert_array_equal(p[p], np.arange(d))  # involution
    np.testing.assert_array_equal(inverse_permutation(p), p)
    rope = _rope_reference(shape)
    # consecutive rope cells are grid neighbours
    for a, b in itertools.pairwise(rope):
        ua, ub = np.unravel_index(a, dims), np.unravel_index(b, dims)
        assert sum(abs(int(i) - int(j)) for i, j in zip(ua, ub, strict=True)) == 1
    for k in range(0, d - 1, 2):  # swaps at rope positions (0, 1), (2, 3), ...
        i, j = rope[k], rope[k + 1]
        assert p[i] == j and p[j] == i
        assert {m[i], m[j]} == {0, 1}  # each swap exchanges a mask-0 and a mask-1 cell
    if d % 2:
        assert p[rope[-1]] == rope[-1]  # the last rope cell stays
    moved = p != np.arange(d)
    np.testing.assert_array_equal(m[p][moved], 1 - m[moved])


@pytest.mark.parametrize("shape", SHAPES)
def test_heaviside_reverse_shuffle_every_shape(shape):
    dims = (shape,) if isinstance(shape, int) else shape
    d = int(np.prod(dims))
    h = d // 2
    p = permutation("heaviside", shape)
    np.testing.assert_array_equal(p, list(range(h, d)) + list(range(h)))
    q = inverse_permutation(p)
    np.testing.assert_array_equal(p[q], np.arange(d))
    np.testing.assert_array_equal(q[p], np.arange(d))
    np.testing.assert_array_equal(q, list(range(d - h, d)) + list(range(d - h)))
    if d % 2 and d > 1:
        assert not np.array_equal(p[p], np.arange(d))  # not its own inverse for odd D
    np.testing.assert_array_equal(permutation("reverse", shape), np.arange(d)[::-1])
    s = permutation("shuffle", shape, seed=7)
    assert sorted(s.tolist()) == list(range(d))
    x = np.arange(d) * 10.0
    np.testing.assert_array_equal(x[s][inverse_permutation(s)], x)


def test_shuffle_is_seeded():
    a = permutation("shuffle", 50, seed=1)
    np.testing.assert_array_equal(a, permutation("shuffle", 50, seed=1))
    assert not np.array_equal(a, permutation("shuffle", 50, seed=2))
    assert sorted(permutation("shuffle", 50).tolist()) == list(range(50))  # unseeded still valid


def test_layout_only_matters_for_checkerboard():
    np.testing.assert_array_equal(permutation("heaviside", (3, 5)), permutation("heaviside", 15))
    np.testing.assert_array_equal(mask("heaviside", (3, 5)), mask("heaviside", 15))
    assert not np.array_equal(permutation("checkerboard", (3, 5)), permutation("checkerboard", 15))


def test_d_equal_one():
    for kind in ("checkerboard", "heaviside", "reverse", "shuffle"):
        np.testing.assert_array_equal(permutation(kind, 1, seed=0), [0])
    np.testing.assert_array_equal(mask("checkerboard", 1), [0])
    np.testing.assert_array_equal(mask("heaviside", 1), [1])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: mask("stripes", 4), "kind"),
        (lambda: mask(None, 4), "kind"),
        (lambda: permutation("random", 4), "kind"),
        (lambda: mask("checkerboard", 0), "shape"),
        (lambda: mask("checkerboard", (3, 0)), "shape"),
        (lambda: mask("checkerboard", ()), "shape"),
        (lambda: mask("checkerboard", (2.5, 2)), "shape"),
        (lambda: permutation("checkerboard", -3), "shape"),
        (lambda: permutation("heaviside", "5"), "shape"),
        (lambda: permutation("shuffle", 5, seed=1.5), "seed"),
        (lambda: inverse_permutation([0, 0, 1]), "p"),
        (lambda: inverse_permutation([1, 2, 3]), "p"),
        (lambda: inverse_permutation([[0, 1]]), "p"),
        (lambda: inverse_permutation([0.0, 1.0]), "p"),
    ],
)
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
