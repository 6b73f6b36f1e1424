"""The ``flow()`` builder: a ready-to-train invertible interpretation network over ``D`` units."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tmx._validate import choice, finite_real, positive_int
from tmx._validate import seed as check_seed
from tmx.flows._masks import PERMUTATION_KINDS, _shape
from tmx.flows._masks import mask as _mask
from tmx.flows._masks import permutation as _permutation
from tmx.flows.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Flow,
    Householder,
    Permute,
    Standardize,
    _child_seeds,
    _hidden,
)

__all__ = ["flow"]

_DEFAULTS = {
    "coupling": "affine",
    "hidden": (256, 256),
    "clamp": 2.0,
    "reflections": 2,
    "permutation": "checkerboard",
    "actnorm": "data",
}


def check_dtype(dtype: Any) -> Any:
    """Validate a Keras dtype / dtype policy argument (``None`` = Keras's current policy)."""
    if dtype is None:
        return None
    try:
        keras.dtype_policies.get(dtype)
    except Exception as err:
        raise ValueError(
            f"dtype must be None, a float dtype name such as 'float64' or a Keras dtype policy; "
            f"got {dtype!r}"
        ) from err
    return dtype


def _gyoza_network(
    d: int, outputs: int, seeds: Sequence[int | None], dtype: Any = None
) -> keras.Sequential:
    """gyoza 0.3.0's coupling network ``Dense(4D, relu) → Dense(D)`` on the conditioning half.

    gyoza feeds the full masked vector ``m ⊙ x`` (``D`` inputs, the masked ones zero) and keeps the
    outputs at the transformed positions; restricted to the inputs and outputs that matter, that
    is this network.  Kernels are drawn as gyoza's Glorot-uniform ones (fans ``D → 4D`` and
    ``4D → D``: both limits ``√(6 / 5D)``), biases are zero.
    """
    limit = float(np.sqrt(6.0 / (5.0 * d)))
    return keras.Sequential(
        [
            keras.layers.Dense(
                4 * d,
                activation="relu",
                kernel_initializer=keras.initializers.RandomUniform(-limit, limit, seed=seeds[0]),
                dtype=dtype,
            ),
            keras.layers.Dense(
                outputs,
                kernel_initializer=keras.initializers.RandomUniform(-limit, limit, seed=seeds[1]),
                dtype=dtype,
            ),
        ]
    )


def _gyoza_layers(
    d: int, shape: tuple[int, ...], blocks: int, seed: int, dtype: Any = None
) -> list[Any]:
    m = _mask("checkerboard", shape)
    p = _permutation("checkerboard", shape)
    n_t = int(np.sum(m == 0))
    seeds = iter(_child_seeds(seed, 5 * blocks))
    layers: list[Any] = [ActNorm("identity", dtype=dtype)]
    for _ in range(blocks):
        layers.append(
            Householder(
                1,
                initializer=keras.initializers.RandomUniform(-1.0, 1.0, next(seeds)),
                dtype=dtype,
            )
        )
        for _ in range(2):
            net = _gyoza_network(d, n_t, (next(seeds), next(seeds)), dtype)
            layers += [AdditiveCoupling(m, network=net, dtype=dtype), Permute(p, dtype=dtype)]
        layers.append(ActNorm("identity", dtype=dtype))
    return layers


def flow(
    units: int,
    *,
    blocks: int = 8,
    coupling: str = "affine",
    hidden: Sequence[int] = (256, 256),
    clamp: float = 2.0,
    reflections: int = 2,
    permutation: str = "checkerboard",
    actnorm: str | None = "data",
    preset: str | None = None,
    seed: int = 0,
    shape: int | Sequence[int] | None = None,
    standardize: bool | None = None,
    dtype: Any = None,
) -> Flow:
    r"""Build an invertible interpretation network ``T`` over ``D = units`` units.

    Default structure (``preset=None``): a :class:`~tmx.flows.layers.Standardize` layer (a fixed,
    non-trainable per-unit standardisation set from the training pairs by :func:`fit`; dead and
    constant units map to 0), then, repeated ``blocks`` times::

        ActNorm(actnorm) → Coupling(m₁) → Permute(p) → Coupling(m₂) → Householder(reflections)

    with ``m₁ = mask(kind, shape)`` (``kind = "heaviside"`` for ``permutation="heaviside"``,
    ``"checkerboard"`` otherwise), ``p = permutation(permutation, shape)`` and
    ``m₂ = 1 − m₁[p]``: the second coupling transforms exactly the units the first one passed
    through (wherever ``p`` moved them), so **every dimension is transformed within each
    coupling–permutation–coupling block**, for every permutation kind and odd ``D`` alike (for a
    checkerboard permutation of even ``D``, ``m₂ = m₁``).  ``"shuffle"`` draws a new seeded
    permutation per block.  With ``D = 1`` both couplings use ``m = [0]``: the conditioning half is
    empty, the network sees a zero-width input and each coupling is a learned translation
    (affine: a learned scale and translation).  Couplings start as the identity (zero-initialised
    last layer) and ``ActNorm(init="data")`` initialises on the first batch it sees, so ``T``
    starts as a per-unit standardisation followed by fixed rotations.

    ``preset="gyoza"`` builds gyoza 0.3.0's disentangling flow model instead (the layer sequence
    of its "Getting Started" tutorial), ``6·blocks + 1`` layers (no ``Standardize`` unless
    ``standardize=True``)::

        ActNorm(identity), then per block:
        Householder(1) → Additive(m) → Permute(p) → Additive(m) → Permute(p) → ActNorm(identity)

    with ``m``/``p`` the checkerboard mask/permutation of ``shape``, coupling networks
    ``Dense(4D, relu) → Dense`` with gyoza's Glorot-uniform initialisation (limits ``√(6/5D)``,
    zero biases, *not* zero-initialised, so ``T`` does not start as the identity), Householder
    vectors drawn uniform in ``[−1, 1]^D`` and normalised, and identity-initialised ``ActNorm``
    (gyoza's ``ActivationNormalization``).  Forward numbers equal gyoza's for the same weights;
    unlike gyoza, the Householder vectors are normalised inside and the conditioning half is
    gathered (gyoza multiplies by a dense mask).  The preset fixes ``coupling``, ``hidden``,
    ``clamp``, ``reflections``, ``permutation`` and ``actnorm``: leave them at their defaults.

    Parameters
    ----------
    units : int
        Number of units ``D`` (flat vector size).
    blocks : int
        Number of blocks (gyoza: stages).
    coupling : {"affine", "additive"}
        :class:`~tmx.flows.layers.AffineCoupling` (soft-clamped, ``clamp``) or
        :class:`~tmx.flows.layers.AdditiveCoupling` (volume preserving).
    hidden : sequence of int
        Hidden sizes of each coupling's ReLU ``Dense`` network (may be empty: linear).
    clamp : float
        Bound of the affine log-scale, ``s = clamp·tanh(s_raw/clamp)``.
    reflections : int
        Householder reflections per block; 0 leaves the Householder layer out.
    permutation : {"checkerboard", "heaviside", "reverse", "shuffle"}
        Permutation between the two couplings of a block (see :func:`tmx.flows.permutation`).
    actnorm : {"data", "identity"} or None
        Initialisation of each block's :class:`~tmx.flows.layers.ActNorm`; ``None`` leaves it out.
    preset : {None, "gyoza"}
        ``"gyoza"``: gyoza 0.3.0's architecture and initialisation (see above).
    seed : int
        Seed of every initialiser and shuffle: the same seed gives identical weights.
    shape : int or sequence of int, optional
        Layout of the ``D`` units (C order) for checkerboard masks and permutations; default
        ``(D,)``.
    standardize : bool, optional
        Put a :class:`~tmx.flows.layers.Standardize` layer first.  Default: True, except with
        ``preset="gyoza"`` (whose numbers it would change).  Without it, ``fit`` refuses units
        whose scale is far from 1 (Adam's fixed step size would make training diverge).
    dtype : str or keras.DTypePolicy, optional
        dtype (policy) of every layer and of the coupling networks, e.g. ``"float64"``; ``None``
        = Keras's current global policy (``keras.config.set_dtype_policy``; note that
        ``keras.config.set_floatx`` does not change a policy that is already set).  A 16-bit
        policy (``"mixed_float16"``) runs the coupling networks in 16 bits and the invertible
        maps and log-determinants in float32.

    Returns
    -------
    Flow
        A built :class:`~tmx.flows.layers.Flow` (``call`` → ``(z̃, logdet)``, ``inverse``), of
        compute dtype ``dtype`` (its weights in the policy's variable dtype).

    References
    ----------
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", arXiv:1605.08803;
    Kingma & Dhariwal (2018), "Glow", arXiv:1807.03039; Tomczak & Welling (2016), "Householder
    flow", arXiv:1611.09630; Esser, Rombach & Ommer (2020), "A disentangling invertible
    interpretation network", arXiv:2004.13166.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> f = flows.flow(4, blocks=1, hidden=(8,), seed=0)
    >>> [type(layer).__name__ for layer in f.flow_layers]
    ['Standardize', 'ActNorm', 'AffineCoupling', 'Permute', 'AffineCoupling', 'Householder']
    >>> y, logdet = f(np.zeros((3, 4), "float32"))
    >>> tuple(y.shape), tuple(logdet.shape)
    ((3, 4), (3,))
    """
    d = positive_int(units, "units")
    blocks = positive_int(blocks, "blocks")
    coupling = choice(coupling, "coupling", ("affine", "additive"))
    hidden = _hidden(hidden)
    clamp = finite_real(clamp, "clamp")
    if clamp <= 0:
        raise ValueError(f"clamp must be positive; got {clamp!r}")
    if (
        isinstance(reflections, bool | np.bool_)
        or not isinstance(reflections, numbers.Integral)
        or reflections < 0
    ):
        raise ValueError(f"reflections must be a non-negative int; got {reflections!r}")
    permutation = choice(permutation, "permutation", PERMUTATION_KINDS)
    if actnorm is not None:
        actnorm = choice(actnorm, "actnorm", ("data", "identity"))
    if preset is not None:
        preset = choice(preset, "preset", ("gyoza",))
    seed = check_seed(seed)
    layout = (d,) if shape is None else _shape(shape, "shape")
    if int(np.prod(layout)) != d:
        raise ValueError(f"shape must have prod(shape) == units ({d}); got {layout}")
    if standardize is None:
        standardize = preset != "gyoza"
    if not isinstance(standardize, bool | np.bool_):
        raise ValueError(f"standardize must be True, False or None; got {standardize!r}")
    dtype = check_dtype(dtype)
    first: list[Any] = [Standardize(dtype=dtype)] if standardize else []

    if preset == "gyoza":
        given = {
            "coupling": coupling,
            "hidden": hidden,
            "clamp": clamp,
            "reflections": int(reflections),
            "permutation": permutation,
            "actnorm": actnorm,
        }
        for name, value in given.items():
            if value != _DEFAULTS[name]:
                raise ValueError(
                    f"{name} is fixed by preset='gyoza'; leave it at its default "
                    f"({_DEFAULTS[name]!r}), got {value!r}"
                )
        model = Flow(first + _gyoza_layers(d, layout, blocks, seed, dtype), dtype=dtype)
        model.build((None, d))
        for layer in model.flow_layers:
            if isinstance(layer, Householder):
                v = keras.ops.convert_to_numpy(layer.vectors)
                layer.vectors.assign(v / np.linalg.norm(v, axis=1, keepdims=True))
        return model

    mask_kind = "heaviside" if permutation == "heaviside" else "checkerboard"
    m1 = np.zeros(1, dtype=np.int64) if d == 1 else _mask(mask_kind, layout)
    seeds = iter(_child_seeds(seed, 4 * blocks))
    cls = AffineCoupling if coupling == "affine" else AdditiveCoupling
    extra = {"clamp": clamp} if coupling == "affine" else {}
    layers: list[Any] = first
    for _ in range(blocks):
        p = _permutation(permutation, layout, seed=next(seeds))
        m2 = m1.copy() if d == 1 else 1 - m1[p]
        if actnorm is not None:
            layers.append(ActNorm(actnorm, dtype=dtype))
        layers.append(cls(m1, hidden=hidden, seed=next(seeds), dtype=dtype, **extra))
        layers.append(Permute(p, dtype=dtype))
        layers.append(cls(m2, hidden=hidden, seed=next(seeds), dtype=dtype, **extra))
        layer_seed = next(seeds)
        if reflections > 0:
            layers.append(Householder(int(reflections), seed=layer_seed, dtype=dtype))
    model = Flow(layers, dtype=dtype)
    model.build((None, d))
    return model
