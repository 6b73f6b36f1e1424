"""Invertible Keras 3 layers for interpretation flows (``tmx.flows.layers``).

Every layer maps flat vectors ``x`` of shape ``[batch, D]`` (``ActNorm`` also ``[batch, …, D]``)
to ``(y, logdet)`` in ``call`` and back to ``(x, logdet)`` in ``inverse``; ``logdet`` has shape
``[batch]`` and is ``log |det ∂y/∂x|`` (``log |det ∂x/∂y|`` for ``inverse``), so that
``logdet_call + logdet_inverse = 0``.

Design points shared by all layers:

- Halves of a coupling and permutations are taken **by index** (gathers), never with a dense
  ``D × D`` matrix or by multiplying with a dense mask, so 10^4–10^5 units are cheap.
- Under a 16-bit dtype policy (e.g. ``mixed_float16``) the flow layers themselves compute in
  the policy's variable dtype (float32): the elementwise maps, the Householder dot products and
  every ``logdet`` stay in float32, while the coupling networks (the heavy part) follow the
  global policy.  float64 inputs are cast to the layer's compute dtype (Keras's convention); build
  a flow with ``dtype="float64"`` to compute in float64.
- Every layer is registered for ``.keras`` saving (package ``"tmx.flows"``); ``get_config`` holds
  everything needed to rebuild it (masks, permutation indices, nested networks), weights hold the
  rest (including ``ActNorm``'s "initialised" flag).

References
----------
Dinh, Krueger & Bengio (2015), "NICE: Non-linear independent components estimation",
arXiv:1410.8516.  Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP",
ICLR, arXiv:1605.08803.  Kingma & Dhariwal (2018), "Glow: Generative flow with invertible 1×1
convolutions", NeurIPS, arXiv:1807.03039.  Tomczak & Welling (2016), "Improving variational
auto-encoders using Householder flow", arXiv:1611.09630.  Esser, Rombach & Ommer (2020), "A
disentangling invertible interpretation network for explaining latent representations", CVPR,
arXiv:2004.13166.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tmx._validate import choice, finite_real, int_vector, positive_int
from tmx._validate import seed as check_seed
from tmx.flows._masks import _as_permutation

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Flow",
    "Householder",
    "Permute",
    "Standardize",
]

_PACKAGE = "tmx.flows"
_SIXTEEN_BIT = ("float16", "bfloat16")


def _flow_dtype(dtype: Any) -> Any:
    """The dtype policy of a flow layer: the requested one, with 16-bit compute promoted.

    A mixed policy (``mixed_float16``, ``mixed_bfloat16``, given or global) becomes its variable
    dtype (float32), so the invertible maps and log-determinants never run in 16 bits.
    """
    policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
    if policy.compute_dtype in _SIXTEEN_BIT:
        return policy.variable_dtype
    return dtype


def _permute_units(x: Any, indices: np.ndarray, inverse: np.ndarray) -> Any:
    """``x[:, indices]`` for a permutation ``indices`` of the units (``inverse`` = its argsort).

    The gradient is the inverse gather ``dy[:, inverse]``: no scatter (a plain gather's
    gradient is an UnsortedSegmentSum with transposes), so the backward pass costs what the
    forward does, without any D×D matrix."""
    forward = tf.constant(indices, tf.int32)
    backward = tf.constant(inverse, tf.int32)

    @tf.custom_gradient
    def permute(t):
        def grad(dy):
            return tf.gather(dy, backward, axis=1)

        return tf.gather(t, forward, axis=1), grad

    return permute(x)


def _batch_zeros(x: Any) -> Any:
    return ops.zeros((ops.shape(x)[0],), dtype=x.dtype)


def _flat_units(input_shape: Any, who: str) -> int:
    shape = tuple(input_shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"{who} acts on flat vectors [batch, units] with a known number of units; "
            f"got input shape {shape}"
        )
    return int(shape[-1])


def _as_mask(mask: Any) -> np.ndarray:
    """Validate a flat 0/1 mask with at least one transformed (0) entry."""
    arr = np.asarray(mask)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"mask must be a non-empty flat (1-D) 0/1 array; got shape {arr.shape}")
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.bool_)
        or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"mask must contain only 0 and 1; got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)][:3].tolist()
        raise ValueError(f"mask must contain only 0 and 1; got values such as {bad}")
    arr = arr.astype(np.int64)
    if not np.any(arr == 0):
        raise ValueError(
            "mask must have at least one 0 (transformed) entry; an all-ones mask transforms nothing"
        )
    return arr


def _hidden(hidden: Any) -> tuple[int, ...]:
    sizes = int_vector(hidden, "hidden", allow_empty=True)
    if any(h < 1 for h in sizes):
        raise ValueError(f"hidden must contain only positive layer sizes; got {list(sizes)}")
    return sizes


def _child_seeds(seed: int | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n) % (2**31 - 1)]


class _FlowLayer(keras.layers.Layer):
    """Base of the invertible layers: dtype promotion and the public ``inverse``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["dtype"] = _flow_dtype(kwargs.get("dtype"))
        super().__init__(**kwargs)

    def inverse(self, y: Any) -> tuple[Any, Any]:
        """Map outputs back to inputs: ``(x, logdet)`` with ``logdet = log|det ∂x/∂y|``."""
        y = ops.cast(ops.convert_to_tensor(y), self.compute_dtype)
        if not self.built:
            self.build(tuple(y.shape))
        return self._inverse(y)

    def _inverse(self, y: Any) -> tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_output_spec(self, x: Any) -> tuple[Any, Any]:
        return (
            keras.KerasTensor(x.shape, dtype=self.compute_dtype),
            keras.KerasTensor((x.shape[0],), dtype=self.compute_dtype),
        )


def dead_or_constant(mean: Any, std: Any, *, invert: bool = False) -> np.ndarray:
    """Units whose standard deviation is 0 or negligible, ``std ≤ 1e-6·|mean|`` + the smallest
    normal float32 (``ActNorm``'s and ``Standardize``'s rule); ``invert=True``: the live ones."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    live = std > 1e-6 * np.abs(mean) + float(np.finfo(np.float32).tiny)
    return live if invert else ~live


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ActNorm(_FlowLayer):
    r"""Activation normalisation: a per-unit affine map with a data-dependent initialisation.

    .. math::

        y = (x - \mathrm{loc}) \odot e^{-\mathrm{log\_scale}}, \qquad
        \log|\det J| = -M \sum_d \mathrm{log\_scale}_d,

    with one ``loc``/``log_scale`` per unit of the last axis and ``M`` the product of the other
    non-batch axes (1 for flat vectors).  The inverse is :math:`x = y e^{\mathrm{log\_scale}} +
    \mathrm{loc}`.

    Parameters
    ----------
    init : {"data", "identity"}
        ``"data"``: on the first batch that reaches ``call``, ``loc`` = the batch mean and
        ``log_scale`` = log of the batch standard deviation (computed in float64), so the output
        has mean 0 and standard deviation 1 per unit; ``log_scale = 0`` where the standard
        deviation is 0 or numerically negligible (``std ≤ 1e-6·|mean|`` + the smallest normal
        float), so dead and constant units stay finite (they map to 0).  A non-trainable weight
        ``initialized`` records that this happened; it is saved with the weights, so a loaded
        layer does not re-initialise.  Calling ``inverse`` first does not initialise.
        ``"identity"``: ``loc = 0``, ``log_scale = 0`` (gyoza's ``ActivationNormalization``,
        which stores ``scale = e^{log_scale}``).

    References
    ----------
    Kingma & Dhariwal (2018), "Glow: Generative flow with invertible 1×1 convolutions",
    arXiv:1807.03039.
    """

    def __init__(self, init: str = "data", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init = choice(init, "init", ("data", "identity"))
        # set once an eager call has seen ``initialized`` = 1 (or initialised the layer)
        self._known_initialised = False

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ValueError(
                f"ActNorm needs inputs [batch, ..., units] with a known number of units; got "
                f"input shape {shape}"
            )
        d = int(shape[-1])
        self.loc = self.add_weight(shape=(d,), initializer="zeros", name="loc")
        self.log_scale = self.add_weight(shape=(d,), initializer="zeros", name="log_scale")
        self.initialized = self.add_weight(
            shape=(),
            initializer="ones" if self.init == "identity" else "zeros",
            trainable=False,
            name="initialized",
        )

    def _assign_from_data(self, x: Any) -> Any:
        xs = ops.cast(x, "float64")
        axes = tuple(range(len(x.shape) - 1))
        mean = ops.mean(xs, axis=axes)
        std = ops.std(xs, axis=axes)
        tiny = float(np.finfo(np.float32).tiny)
        live = std > 1e-6 * ops.abs(mean) + tiny
        log_scale = ops.where(live, ops.log(ops.where(live, std, 1.0)), 0.0)
        self.loc.assign(ops.cast(mean, self.variable_dtype))
        self.log_scale.assign(ops.cast(log_scale, self.variable_dtype))
        self.initialized.assign(ops.ones((), dtype=self.variable_dtype))
        return ops.ones((), dtype="bool")

    def _maybe_initialise(self, x: Any) -> None:
        if self._known_initialised:  # no data-dependent branch left in compiled graphs
            return
        if tf.executing_eagerly():
            if float(ops.convert_to_numpy(self.initialized)) < 0.5:
                self._assign_from_data(x)
            self._known_initialised = True
        else:
            tf.cond(
                self.initialized.value < 0.5,
                lambda: self._assign_from_data(x),
                lambda: ops.zeros((), dtype="bool"),
            )

    def _logdet(self, x: Any) -> Any:
        m = 1
        for n in x.shape[1:-1]:
            m *= int(n)
        total = -float(m) * ops.sum(ops.cast(self.log_scale, x.dtype))
        return _batch_zeros(x) + total

    def call(self, x: Any) -> tuple[Any, Any]:
        if self.init == "data":
            self._maybe_initialise(x)
        loc = ops.cast(self.loc, x.dtype)
        log_scale = ops.cast(self.log_scale, x.dtype)
        return (x - loc) * ops.exp(-log_scale), self._logdet(x)

    def _inverse(self, y: Any) -> tuple[Any, Any]:
        loc = ops.cast(self.loc, y.dtype)
        log_scale = ops.cast(self.log_scale, y.dtype)
        return y * ops.exp(log_scale) + loc, -self._logdet(y)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"init": self.init})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Standardize(ActNorm):
    r"""A fixed per-unit standardisation: an :class:`ActNorm` that is set from data, never trained.

    .. math::

        y = (x - \mathrm{loc}) \odot e^{-\mathrm{log\_scale}}, \qquad
        \log|\det J| = -\sum_d \mathrm{log\_scale}_d,

    with ``loc`` the mean and ``e^{log_scale}`` the standard deviation of each unit (float64
    statistics).  **Dead and constant units** (standard deviation 0 or ``≤ 1e-6·|mean|``) get
    ``loc`` = their value and the live units' RMS standard deviation as their scale: they map to
    exactly 0, carrying no information into the rest of the flow, and a round trip keeps them to
    the layer's precision.
    The weights are non-trainable, so the optimiser never moves them: a layer whose responses have
    a scale of 1e-12 (or 1e6) reaches the trainable layers at scale 1, where Adam's steps of about
    ``learning_rate`` are meaningful (on the raw units they would be 10^9 standard deviations).

    :func:`tmx.flows.flow` puts one first by default, and :func:`tmx.flows.fit` sets it from the
    training pairs (``a`` and ``b`` pooled, up to 10,000 rows of each) before training, unless it
    has already been set; otherwise, like ``ActNorm(init="data")``, it is set by the first batch
    it is called on.  The statistics are weights of the flow (with the ``initialized`` flag), so
    ``transform``/``inverse`` and a saved and loaded flow apply exactly the standardisation that
    training used.

    Parameters
    ----------
    **kwargs
        Keras layer arguments (``name``, ``dtype``).  ``trainable`` is always False.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("init", None)
        kwargs["trainable"] = False
        super().__init__("data", **kwargs)

    def set_statistics(self, mean: Any, std: Any) -> None:
        """Set ``loc = mean`` and ``log_scale = log(std)`` per unit and mark the layer initialised.

        Dead or constant units (``std ≤ 1e-6·|mean|`` + the smallest normal float32) get the live
        units' RMS standard deviation (1 when none is live) instead of their own.

        Parameters
        ----------
        mean, std : array-like, shape [D]
            Finite per-unit mean and standard deviation (``std ≥ 0``) of the responses.
        """
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise ValueError(
                f"mean and std must be 1-D of one entry per unit; got {mean.shape}, {std.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise ValueError(
                "mean and std must be finite (std >= 0): the responses hold NaN or infinite values"
            )
        if not self.built:
            self.build((None, mean.size))
        live = dead_or_constant(mean, std, invert=True)
        # dead units: the live units' RMS scale, so a round trip keeps them to the layer's
        # precision (a scale of 1 would give errors of ~1e-7 on a layer of scale 1e-12)
        fill = float(np.sqrt(np.mean(std[live] ** 2))) if np.any(live) else 1.0
        log_scale = np.log(np.where(live, std, fill))
        self.loc.assign(mean.astype(self.variable_dtype))
        self.log_scale.assign(log_scale.astype(self.variable_dtype))
        self.initialized.assign(np.ones((), dtype=self.variable_dtype))
        self._known_initialised = False  # re-read the flag on the next eager call

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("init", None)
        config.pop("trainable", None)
        return config


class _Coupling(_FlowLayer):
    """Shared machinery of the coupling layers (index gathers, the network, serialisation)."""

    _params_per_unit = 1

    def __init__(
        self,
        mask: Any,
        network: keras.layers.Layer | None = None,
        hidden: Sequence[int] = (256, 256),
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        network_dtype = kwargs.get("dtype")
        super().__init__(**kwargs)
        self._mask = _as_mask(mask)
        self.hidden = _hidden(hidden)
        self.seed = check_seed(seed, allow_none=True)
        self._cond = np.flatnonzero(self._mask == 1).astype(np.int64)
        self._trans = np.flatnonzero(self._mask == 0).astype(np.int64)
        self._order = np.concatenate([self._cond, self._trans])  # conditioning half first
        self._merge = np.argsort(self._order, kind="stable")
        if network is None:
            network = self._default_network(network_dtype)
        elif not isinstance(network, keras.layers.Layer):
            raise ValueError(
                "network must be a keras Layer or Model mapping the conditioning half "
                f"[batch, {self._cond.size}] to [batch, {self._outputs()}]; got "
                f"{type(network).__name__}"
            )
        self.network = network

    @property
    def mask(self) -> np.ndarray:
        """The flat 0/1 mask (1 = pass-through/conditioning, 0 = transformed)."""
        return self._mask.copy()

    def _outputs(self) -> int:
        return self._params_per_unit * int(self._trans.size)

    def _default_network(self, dtype: Any) -> keras.Sequential:
        seeds = _child_seeds(self.seed, len(self.hidden))
        layers: list[keras.layers.Layer] = [
            keras.layers.Dense(
                h,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=s),
                dtype=dtype,
            )
            for h, s in zip(self.hidden, seeds, strict=True)
        ]
        layers.append(
            keras.layers.Dense(
                self._outputs(), kernel_initializer="zeros", bias_initializer="zeros", dtype=dtype
            )
        )
        return keras.Sequential(layers)

    def build(self, input_shape: Any) -> None:
        d = _flat_units(input_shape, type(self).__name__)
        if d != self._mask.size:
            raise ValueError(
                f"mask has {self._mask.size} entries but the input has {d} units; they must match"
            )
        if not self.network.built:
            self.network.build((None, int(self._cond.size)))
        try:
            out = tuple(self.network.compute_output_shape((None, int(self._cond.size))))
        except Exception:  # layers without a static output shape: checked in call
            out = None
        if out is not None and out[-1] is not None and out[-1] != self._outputs():
            raise ValueError(
                f"network must map [batch, {self._cond.size}] to [batch, {self._outputs()}]; "
                f"it gives {out}"
            )

    def _params(self, x_cond: Any, dtype: Any) -> Any:
        params = self.network(x_cond)
        if params.shape[-1] is not None and params.shape[-1] != self._outputs():
            raise ValueError(
                f"network must map [batch, {self._cond.size}] to [batch, {self._outputs()}]; "
                f"it gives {tuple(params.shape)}"
            )
        return ops.cast(params, dtype)

    def _split(self, x: Any) -> tuple[Any, Any]:
        ordered = _permute_units(x, self._order, self._merge)
        k = int(self._cond.size)
        return ordered[:, :k], ordered[:, k:]

    def _merge_halves(self, x_cond: Any, x_trans: Any) -> Any:
        return _permute_units(ops.concatenate([x_cond, x_trans], axis=1), self._merge, self._order)

    def _forward(self, x_t: Any, params: Any) -> tuple[Any, Any]:  # pragma: no cover
        raise NotImplementedError

    def _backward(self, y_t: Any, params: Any) -> tuple[Any, Any]:  # pragma: no cover
        raise NotImplementedError

    def call(self, x: Any) -> tuple[Any, Any]:
        x_c, x_t = self._split(x)
        y_t, logdet = self._forward(x_t, self._params(x_c, x.dtype))
        return self._merge_halves(x_c, y_t), logdet

    def _inverse(self, y: Any) -> tuple[Any, Any]:
        y_c, y_t = self._split(y)
        x_t, logdet = self._backward(y_t, self._params(y_c, y.dtype))
        return self._merge_halves(y_c, x_t), logdet

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "mask": self._mask.tolist(),
                "network": keras.saving.serialize_keras_object(self.network),
                "hidden": list(self.hidden),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Coupling:
        config = dict(config)
        network = config.pop("network", None)
        if network is not None:
            network = keras.saving.deserialize_keras_object(network)
        return cls(network=network, **config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdditiveCoupling(_Coupling):
    r"""Additive coupling (NICE): the transformed half is shifted by a function of the other half.

    With ``c`` the indices where ``mask == 1`` (pass-through/conditioning half) and ``t`` those
    where ``mask == 0``:

    .. math::

        y_c = x_c, \qquad y_t = x_t + g(x_c), \qquad \log|\det J| = 0,

    and the inverse is :math:`x_t = y_t - g(y_c)`.  Both halves are gathered by index and put back
    with an index gather of their concatenation (no dense masks or matrices).

    Parameters
    ----------
    mask : array_like of {0, 1}
        Flat mask over the ``D`` units with at least one 0.  If it has no 1 (e.g. ``D = 1``), the
        conditioning half is empty: the network gets a zero-width input, so ``g`` is a learned
        constant (the default network's biases) and the layer is a learned translation.
    network : keras.layers.Layer, optional
        Maps ``[batch, #c]`` to ``[batch, #t]``.  Default: a ``keras.Sequential`` of ReLU
        ``Dense`` layers of sizes ``hidden`` (Glorot-uniform, seeded by ``seed``) ending in a
        zero-initialised linear ``Dense``, so the layer starts as the identity.
    hidden : sequence of int
        Hidden sizes of the default network (ignored when ``network`` is given).
    seed : int, optional
        Seed of the default network's initialisers.

    References
    ----------
    Dinh, Krueger & Bengio (2015), "NICE: Non-linear independent components estimation",
    arXiv:1410.8516.
    """

    _params_per_unit = 1

    def _forward(self, x_t: Any, params: Any) -> tuple[Any, Any]:
        return x_t + params, _batch_zeros(x_t)

    def _backward(self, y_t: Any, params: Any) -> tuple[Any, Any]:
        return y_t - params, _batch_zeros(y_t)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AffineCoupling(_Coupling):
    r"""Affine coupling (RealNVP) with a soft-clamped log-scale.

    With ``c``/``t`` the pass-through/transformed indices (``mask`` 1/0) and the network output
    split as ``[s_raw, shift] = g(x_c)`` (first ``#t`` columns, then ``#t`` columns):

    .. math::

        s = \mathrm{clamp}\cdot\tanh(s_{raw}/\mathrm{clamp}), \qquad
        y_c = x_c, \qquad y_t = x_t \odot e^{s} + \mathrm{shift}, \qquad
        \log|\det J| = \sum_t s_t,

    and the inverse is :math:`x_t = (y_t - \mathrm{shift}) \odot e^{-s}`.  ``|s| < clamp`` keeps
    each layer's scale within ``e^{±clamp}``.

    Parameters
    ----------
    mask : array_like of {0, 1}
        Flat mask with at least one 0; with no 1 (``D = 1``) the network sees a zero-width input
        and ``s`` and ``shift`` are learned constants.
    network : keras.layers.Layer, optional
        Maps ``[batch, #c]`` to ``[batch, 2·#t]``.  Default as in :class:`AdditiveCoupling`
        (ReLU ``Dense`` stack, zero-initialised last layer: the layer starts as the identity).
    hidden : sequence of int
        Hidden sizes of the default network.
    clamp : float
        Positive bound of the log-scale.
    seed : int, optional
        Seed of the default network's initialisers.

    References
    ----------
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", arXiv:1605.08803.
    Soft-clamping the log-scale follows Ardizzone et al. (2019), "Guided image generation with
    conditional invertible neural networks", arXiv:1907.02392 (who use an arctan; tmx uses tanh).
    """

    _params_per_unit = 2

    def __init__(
        self,
        mask: Any,
        network: keras.layers.Layer | None = None,
        hidden: Sequence[int] = (256, 256),
        clamp: float = 2.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        clamp = finite_real(clamp, "clamp")
        if clamp <= 0:
            raise ValueError(f"clamp must be positive; got {clamp!r}")
        super().__init__(mask, network=network, hidden=hidden, seed=seed, **kwargs)
        self.clamp = clamp

    def _scale_shift(self, params: Any) -> tuple[Any, Any]:
        n = int(self._trans.size)
        s = self.clamp * ops.tanh(params[:, :n] / self.clamp)
        return s, params[:, n:]

    def _forward(self, x_t: Any, params: Any) -> tuple[Any, Any]:
        s, shift = self._scale_shift(params)
        return x_t * ops.exp(s) + shift, ops.sum(s, axis=1)

    def _backward(self, y_t: Any, params: Any) -> tuple[Any, Any]:
        s, shift = self._scale_shift(params)
        return (y_t - shift) * ops.exp(-s), -ops.sum(s, axis=1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"clamp": self.clamp})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Permute(_FlowLayer):
    r"""A fixed permutation of the units: :math:`y_i = x_{p_i}`, :math:`\log|\det J| = 0`.

    The inverse gathers with :math:`q = \mathrm{argsort}(p)`.  The indices are part of the
    config, so a shuffled permutation survives ``.keras`` save/load, ``from_config`` and
    ``keras.models.clone_model`` (gyoza redraws its shuffle on ``from_config``).

    Parameters
    ----------
    indices : sequence of int
        A permutation of ``0 … D−1`` (see :func:`tmx.flows.permutation`).

    References
    ----------
    Dinh, Krueger & Bengio (2015), "NICE: Non-linear independent components estimation",
    arXiv:1410.8516.
    """

    def __init__(self, indices: Sequence[int] | np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._indices = _as_permutation(indices, "indices")
        self._inverse_indices = np.argsort(self._indices, kind="stable").astype(np.int64)

    @property
    def indices(self) -> np.ndarray:
        """The permutation ``p`` (``y_flat[i] = x_flat[p[i]]``)."""
        return self._indices.copy()

    def build(self, input_shape: Any) -> None:
        d = _flat_units(input_shape, "Permute")
        if d != self._indices.size:
            raise ValueError(
                f"indices has {self._indices.size} entries but the input has {d} units; they "
                "must match"
            )

    def call(self, x: Any) -> tuple[Any, Any]:
        return _permute_units(x, self._indices, self._inverse_indices), _batch_zeros(x)

    def _inverse(self, y: Any) -> tuple[Any, Any]:
        return _permute_units(y, self._inverse_indices, self._indices), _batch_zeros(y)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"indices": self._indices.tolist()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Householder(_FlowLayer):
    r"""A product of learned Householder reflections (an orthogonal map, ``logdet = 0``).

    .. math::

        H_r = I - 2\,\frac{v_r v_r^\top}{\lVert v_r\rVert^2}, \qquad
        y = H_{R-1} \cdots H_1 H_0\, x, \qquad x = H_0 H_1 \cdots H_{R-1}\, y,

    i.e. ``H_0`` is applied first on the forward pass and the reflections run in reverse order on
    the inverse (each is its own inverse).  The vectors are normalised inside, so any parameter
    value is an exact reflection (gyoza omits the normalisation and relies on a unit-norm
    constraint); a zero vector gives the identity.  Each reflection costs ``O(batch·D)``.

    Parameters
    ----------
    reflections : int
        Number of reflections ``R ≥ 1``.
    initializer : keras initializer, optional
        Initialiser of the ``[R, D]`` weight ``vectors``; default normal with standard deviation
        ``1/√D`` (rows of norm ≈ 1) seeded by ``seed``.
    seed : int, optional
        Seed of the default initialiser.

    References
    ----------
    Tomczak & Welling (2016), "Improving variational auto-encoders using Householder flow",
    arXiv:1611.09630.
    """

    def __init__(
        self,
        reflections: int = 2,
        initializer: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reflections = positive_int(reflections, "reflections")
        self.initializer = None if initializer is None else keras.initializers.get(initializer)
        self.seed = check_seed(seed, allow_none=True)

    def build(self, input_shape: Any) -> None:
        d = _flat_units(input_shape, "Householder")
        init = self.initializer or keras.initializers.RandomNormal(
            stddev=1.0 / np.sqrt(d), seed=self.seed
        )
        self.vectors = self.add_weight(
            shape=(self.reflections, d), initializer=init, name="vectors"
        )

    def _unit_vectors(self, dtype: Any) -> Any:
        v = ops.cast(self.vectors, dtype)
        norm2 = ops.sum(v * v, axis=1, keepdims=True)
        tiny = float(np.finfo(np.float32).tiny)
        return v / ops.sqrt(ops.maximum(norm2, tiny))

    def _reflect(self, x: Any, order: Sequence[int]) -> Any:
        u = self._unit_vectors(x.dtype)
        for r in order:
            u_r = u[r : r + 1]
            x = x - 2.0 * ops.sum(x * u_r, axis=1, keepdims=True) * u_r
        return x

    def call(self, x: Any) -> tuple[Any, Any]:
        return self._reflect(x, range(self.reflections)), _batch_zeros(x)

    def _inverse(self, y: Any) -> tuple[Any, Any]:
        return self._reflect(y, range(self.reflections - 1, -1, -1)), _batch_zeros(y)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "reflections": self.reflections,
                "initializer": None
                if self.initializer is None
                else keras.initializers.serialize(self.initializer),
                "seed": self.seed,
            }
        )
        return config


def _plain(value: Any) -> Any:
    """Plain JSON-able Python (lists, dicts, str, int, float) from numpy/Keras containers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _factors(factors: Any) -> list[str] | None:
    if factors is None:
        return None
    if isinstance(factors, str) or not isinstance(factors, Sequence | np.ndarray):
        raise ValueError(f"factors must be a sequence of names; got {factors!r}")
    out = [_plain(f) for f in factors]
    if not all(isinstance(f, str) for f in out):
        raise ValueError(f"factors must contain only strings; got {out!r}")
    return out


def _dimensions(dimensions: Any) -> list[int] | None:
    if dimensions is None:
        return None
    dims = list(int_vector(dimensions, "dimensions"))
    if any(n < 0 for n in dims):
        raise ValueError(f"dimensions must be non-negative; got {dims}")
    return dims


def _unit_coords(coords: Any) -> dict[str, list[Any]] | None:
    if coords is None:
        return None
    if not isinstance(coords, Mapping):
        raise ValueError(f"unit_coords must be a dict of 1-D lists; got {type(coords).__name__}")
    out: dict[str, list[Any]] = {}
    for key, values in coords.items():
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"unit_coords[{key!r}] must be 1-D; got shape {arr.shape}")
        out[str(key)] = _plain(list(values))
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise ValueError(f"unit_coords entries must all have the same length; got {lengths}")
    return out


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Flow(keras.Model):
    r"""A sequence of invertible layers: ``call`` applies them in order, ``inverse`` in reverse.

    .. math::

        y = f_L \circ \cdots \circ f_1(x), \qquad
        \log|\det J| = \sum_{l=1}^{L} \log|\det J_{f_l}|.

    ``call(x)`` returns ``(y, logdet)`` and ``inverse(y)`` returns ``(x, logdet)``, both logdets of
    shape ``[batch]`` with ``logdet_call + logdet_inverse = 0``.

    Parameters
    ----------
    layers : sequence of keras.layers.Layer
        Any layers whose ``call`` returns ``(y, logdet)`` and that have an ``inverse`` returning
        ``(x, logdet)`` (all the layers of this module).
    factors : sequence of str, optional
        Names of the factor blocks of ``y`` (residual first).  Metadata: kept in the config.
    dimensions : sequence of int, optional
        Sizes of the factor blocks (contiguous, residual first); must sum to the unit count.
    unit_coords : dict of str to list, optional
        Coordinates of the ``D`` input units (e.g. ``layer``, ``channel``, ``y``, ``x``,
        ``unit``), each a list of length ``D``, so that results can be labelled after
        ``keras.models.load_model``.

    Notes
    -----
    All three metadata attributes default to ``None``, may be set after construction, and are
    saved in the config.

    References
    ----------
    Dinh, Krueger & Bengio (2015), arXiv:1410.8516; Esser, Rombach & Ommer (2020),
    arXiv:2004.13166.
    """

    def __init__(
        self,
        layers: Sequence[keras.layers.Layer],
        *,
        factors: Sequence[str] | None = None,
        dimensions: Sequence[int] | None = None,
        unit_coords: Mapping[str, Sequence[Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["dtype"] = _flow_dtype(kwargs.get("dtype"))
        super().__init__(**kwargs)
        if isinstance(layers, keras.layers.Layer) or not isinstance(layers, Sequence):
            raise ValueError(
                f"layers must be a list of invertible layers; got {type(layers).__name__}"
            )
        for i, layer in enumerate(layers):
            if not isinstance(layer, keras.layers.Layer) or not callable(
                getattr(layer, "inverse", None)
            ):
                raise ValueError(
                    f"layers[{i}] must be a keras Layer with an inverse method; got "
                    f"{type(layer).__name__}"
                )
        self.flow_layers = list(layers)
        self.factors = _factors(factors)
        self.dimensions = _dimensions(dimensions)
        if (
            self.factors is not None
            and self.dimensions is not None
            and len(self.factors) != len(self.dimensions)
        ):
            raise ValueError(
                f"dimensions must have one entry per factor ({len(self.factors)}); got "
                f"{len(self.dimensions)}"
            )
        self.unit_coords = _unit_coords(unit_coords)

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        d = shape[-1]
        if d is not None:
            if self.dimensions is not None and sum(self.dimensions) != d:
                raise ValueError(
                    f"dimensions must sum to the number of units ({d}); got {self.dimensions}"
                )
            if self.unit_coords:
                n = len(next(iter(self.unit_coords.values())))
                if n != d:
                    raise ValueError(
                        f"unit_coords entries must have one value per unit ({d}); got {n}"
                    )
        for layer in self.flow_layers:
            if not layer.built:
                layer.build(shape)

    def call(self, x: Any) -> tuple[Any, Any]:
        logdet = _batch_zeros(x)
        for layer in self.flow_layers:
            x, ld = layer(x)
            logdet = logdet + ops.cast(ld, logdet.dtype)
        return x, logdet

    def inverse(self, y: Any) -> tuple[Any, Any]:
        """Map outputs back to inputs: ``(x, logdet)``, the layers' inverses in reverse order."""
        y = ops.cast(ops.convert_to_tensor(y), self.compute_dtype)
        if not self.built:
            self.build(tuple(y.shape))
        logdet = _batch_zeros(y)
        for layer in reversed(self.flow_layers):
            y, ld = layer.inverse(y)
            logdet = logdet + ops.cast(ld, logdet.dtype)
        return y, logdet

    def compute_output_spec(self, x: Any) -> tuple[Any, Any]:
        return (
            keras.KerasTensor(x.shape, dtype=self.compute_dtype),
            keras.KerasTensor((x.shape[0],), dtype=self.compute_dtype),
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "layers": [keras.saving.serialize_keras_object(la) for la in self.flow_layers],
                "factors": _plain(self.factors),
                "dimensions": _plain(self.dimensions),
                "unit_coords": _plain(self.unit_coords),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Flow:
        config = dict(config)
        layers = [keras.saving.deserialize_keras_object(la) for la in config.pop("layers")]
        return cls(layers, **config)
