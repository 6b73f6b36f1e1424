"""Coupling masks and dimension permutations for invertible flows (semantics in ``flows.md``).

Everything here works on *flat* index arrays: the ``D`` units of a layer are laid out in C order
over ``shape`` (e.g. ``(y, x, channel)`` of a convolutional layer), and masks and permutations are
int arrays of length ``D`` over that flat order.  Nothing here builds a ``D × D`` matrix, so sizes
of 10^4–10^5 units are cheap.

References
----------
Dinh, Krueger & Bengio (2015), "NICE: Non-linear independent components estimation",
arXiv:1410.8516.  Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP",
ICLR, arXiv:1605.08803 (checkerboard masks).  Esser, Rombach & Ommer (2020), "A disentangling
invertible interpretation network for explaining latent representations", CVPR, arXiv:2004.13166.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from tmx._validate import choice
from tmx._validate import seed as check_seed

__all__ = ["inverse_permutation", "mask", "permutation"]

MASK_KINDS = ("checkerboard", "heaviside")
PERMUTATION_KINDS = ("checkerboard", "heaviside", "reverse", "shuffle")


def _shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """An int ``D`` or a non-empty sequence of positive ints, as a tuple."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool | np.bool_):
        shape = (shape,)
    if isinstance(shape, str | bytes) or not hasattr(shape, "__len__") or len(shape) == 0:
        raise ValueError(
            f"{name} must be a positive int or a non-empty sequence of positive ints; got {shape!r}"
        )
    out = []
    for n in shape:
        if isinstance(n, bool | np.bool_) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(
                f"{name} must be a positive int or a non-empty sequence of positive ints; "
                f"got {tuple(shape)!r}"
            )
        out.append(int(n))
    return tuple(out)


def mask(kind: str, shape: int | tuple[int, ...]) -> np.ndarray:
    """A flat coupling mask: 1 = pass-through (conditioning) half, 0 = transformed half.

    Parameters
    ----------
    kind : {"checkerboard", "heaviside"}
        ``"checkerboard"``: ``m[i1, …, ik] = (i1 + … + ik) mod 2`` over ``shape`` (the origin is 0,
        so for odd ``D`` the extra element is in the transformed half).  ``"heaviside"``: the first
        ``⌊D/2⌋`` flat entries are 0, the rest 1.
    shape : int or tuple of int
        ``D`` or the layout of the ``D`` units (C order).

    Returns
    -------
    numpy.ndarray
        Flat ``int64`` array of length ``D = prod(shape)``.

    Examples
    --------
    ``mask("checkerboard", (3, 5))`` is ``01010 10101 01010``; ``mask("heaviside", 5)`` is
    ``00111``.

    References
    ----------
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", arXiv:1605.08803.

    Examples
    --------
    >>> from tmx import flows
    >>> flows.mask("checkerboard", 6)
    array([0, 1, 0, 1, 0, 1])
    >>> flows.mask("heaviside", 5)
    array([0, 0, 1, 1, 1])
    """
    kind = choice(kind, "kind", MASK_KINDS)
    shape = _shape(shape)
    d = int(np.prod(shape))
    if kind == "checkerboard":
        return (np.indices(shape).sum(axis=0) % 2).reshape(-1).astype(np.int64)
    out = np.ones(d, dtype=np.int64)
    out[: d // 2] = 0
    return out


def _rope(shape: tuple[int, ...]) -> np.ndarray:
    """Flat C-order indices of the cells of ``shape`` in boustrophedon ("rope") order.

    The last axis runs fastest; every axis reverses its direction each time the axes before it
    take a step, so consecutive rope cells are neighbours on the grid.
    """
    cells = np.arange(shape[0]).reshape(-1, 1)
    for n in shape[1:]:
        steps = cells.shape[0]
        forward = np.arange(n)
        last = np.where((np.arange(steps) % 2 == 0)[:, None], forward, forward[::-1])
        cells = np.concatenate([np.repeat(cells, n, axis=0), last.reshape(-1, 1)], axis=1)
    return np.array(np.ravel_multi_index(tuple(cells.T), shape), dtype=np.int64)


def permutation(kind: str, shape: int | tuple[int, ...], seed: int | None = None) -> np.ndarray:
    """A flat permutation ``p`` with ``y_flat[i] = x_flat[p[i]]`` (inverse: ``argsort(p)``).

    Parameters
    ----------
    kind : {"checkerboard", "heaviside", "reverse", "shuffle"}
        ``"checkerboard"``: walk ``shape`` along the rope (boustrophedon order: last axis fastest,
        each axis reversing direction whenever an axis before it advances) and swap the cells at
        rope positions (0, 1), (2, 3), …; for odd ``D`` the last rope cell stays.  It is an
        involution, and every swap exchanges a mask-0 and a mask-1 cell of
        ``mask("checkerboard", shape)``.  ``"heaviside"``: ``[⌊D/2⌋, …, D−1, 0, …, ⌊D/2⌋−1]``
        (not its own inverse for odd ``D``).  ``"reverse"``: ``[D−1, …, 0]``.  ``"shuffle"``: a
        uniformly random permutation drawn from ``numpy.random.default_rng(seed)``.
    shape : int or tuple of int
        ``D`` or the layout of the ``D`` units (C order); only ``"checkerboard"`` uses the layout.
    seed : int, optional
        Seed of ``"shuffle"`` (``None``: fresh entropy); ignored by the other kinds.

    Returns
    -------
    numpy.ndarray
        Flat ``int64`` permutation of ``0 … D−1``.

    Examples
    --------
    ``permutation("checkerboard", (3, 5))`` is
    ``[1, 0, 3, 2, 9, 6, 5, 8, 7, 4, 11, 10, 13, 12, 14]``; ``permutation("heaviside", 5)`` is
    ``[2, 3, 4, 0, 1]`` with inverse ``[3, 4, 0, 1, 2]``.

    References
    ----------
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", arXiv:1605.08803;
    the rope construction follows gyoza 0.3.0's ``CheckerBoardPermutation``.

    Examples
    --------
    >>> from tmx import flows
    >>> flows.permutation("checkerboard", 6)
    array([1, 0, 3, 2, 5, 4])
    >>> p = flows.permutation("shuffle", 5, seed=0)
    >>> sorted(p.tolist())
    [0, 1, 2, 3, 4]
    """
    kind = choice(kind, "kind", PERMUTATION_KINDS)
    shape = _shape(shape)
    d = int(np.prod(shape))
    if kind == "heaviside":
        return np.concatenate([np.arange(d // 2, d), np.arange(d // 2)]).astype(np.int64)
    if kind == "reverse":
        return np.arange(d - 1, -1, -1, dtype=np.int64)
    if kind == "shuffle":
        seed = check_seed(seed, allow_none=True)
        return np.random.default_rng(seed).permutation(d).astype(np.int64)
    rope = _rope(shape)
    pairs = (d // 2) * 2
    swapped = rope.copy()
    swapped[0:pairs:2] = rope[1:pairs:2]
    swapped[1:pairs:2] = rope[0:pairs:2]
    out = np.empty(d, dtype=np.int64)
    out[rope] = swapped
    return out


def _as_permutation(p: Any, name: str = "p") -> np.ndarray:
    """Validate a permutation of ``0 … D−1`` (1-D, integers, each exactly once)."""
    arr = np.asarray(p)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of ints; got shape {arr.shape}")
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer)
        or (arr.dtype == object and all(isinstance(v, numbers.Integral) for v in arr))
    ):
        raise ValueError(f"{name} must contain only integers; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if not np.array_equal(np.sort(arr), np.arange(arr.size)):
        raise ValueError(
            f"{name} must be a permutation of 0 … {arr.size - 1} (each index exactly once)"
        )
    return arr


def inverse_permutation(p: Any) -> np.ndarray:
    """The inverse ``q = argsort(p)`` of a flat permutation, so that ``p[q] = q[p] = arange(D)``.

    Parameters
    ----------
    p : sequence of int
        A permutation of ``0 … D−1``.

    Returns
    -------
    numpy.ndarray
        Flat ``int64`` array ``q`` with ``x_flat[j] = y_flat[q[j]]`` when ``y_flat = x_flat[p]``.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> p = np.array([2, 0, 1])
    >>> q = flows.inverse_permutation(p)
    >>> q, p[q]
    (array([1, 2, 0]), array([0, 1, 2]))
    """
    return np.argsort(_as_permutation(p, "p"), kind="stable").astype(np.int64)
