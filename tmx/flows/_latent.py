"""Labeled use of a trained interpretation flow: the latent code, its inverse and factor edits.

A flow ``T`` maps a layer's units ``z`` (``D`` of them, the cube's ``unit`` axis) to
``z̃ = T(z)``, whose dimensions are contiguous factor blocks (residual first, sizes
``flow.dimensions``, names ``flow.factors``).  Because ``T`` is invertible, a factor block can be
swapped with another sample's or interpolated, and the edited code mapped back to the layer's
units and through the rest of the model (Esser, Rombach & Ommer 2020, "A Disentangling
Invertible Interpretation Network for Explaining Latent Representations", CVPR,
arXiv:2004.13166).  Semantics: ``docs/flows.md``.

Every function here is a pure function over labeled arrays: the flow is only called (its
``ActNorm`` layers must have seen data already, see :func:`transform`), never changed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import dask.array as da
import keras
import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _batching
from .. import _validate as v
from .. import inspect as _inspect
from .._memo import memo, per_object
from .._progress import Steps, dask_bar, steps
from .._progress import resolve as resolve_progress
from .._provenance import provenance
from .._schema import unit_coords
from .._validate import str_array
from ..inspect import load_model
from .layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Flow,
    Householder,
    Permute,
    Standardize,
)

__all__ = ["interpolate", "inverse", "swap", "transform"]

_REFERENCE = "Esser, Rombach & Ommer (2020), arXiv:2004.13166"
# eager and compiled forward/inverse paths of live flows, and rewired models of live models (weakly)
_COMPILED = per_object()
_REWIRED = per_object()
log = logging.getLogger("tmx")


# -- the flow and its metadata -------------------------------------------------------------------
def _check_flow(flow: Any) -> Flow:
    if not isinstance(flow, Flow):
        raise ValueError(
            f"flow must be a tmx.flows.Flow (from tmx.flows.flow or tmx.flows.fit); got "
            f"{type(flow).__name__}"
        )
    if not flow.built:
        raise ValueError("flow must be built (call it on a batch, or build it with tmx.flows.flow)")
    _check_initialised(flow)
    return flow


def _check_initialised(flow: Any) -> None:
    """Refuse flows whose data-initialised ActNorm layers have not seen data yet.

    Calling such a flow would initialise them on whichever batch came first: the results would
    depend on the batching (and the flow would be changed).
    """
    stack = list(getattr(flow, "flow_layers", []))
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "flow_layers", []))
        if (
            isinstance(layer, ActNorm)
            and layer.init == "data"
            and float(keras.ops.convert_to_numpy(layer.initialized)) < 0.5
        ):
            raise ValueError(
                f"flow: its ActNorm layer {layer.name!r} (init='data') has not seen data yet, "
                "so calling the flow would initialise it on the first batch; train the flow "
                "(tmx.flows.fit) or call it once on a representative batch, flow(x), first"
            )


def _units(flow: Flow) -> int:
    """The flow's number of units D (its build shape, else its masks or metadata)."""
    d = None
    try:
        shape = (flow.get_build_config() or {}).get("input_shape")
    except Exception:  # pragma: no cover - Keras internals
        shape = None
    if shape is not None and len(shape) == 2 and shape[-1] is not None:
        d = int(shape[-1])
    if d is None:
        masks = [la._mask for la in flow.flow_layers if getattr(la, "_mask", None) is not None]
        if masks:
            d = int(masks[0].size)
    if d is None and flow.dimensions is not None:
        d = int(sum(flow.dimensions))
    if d is None and flow.unit_coords:
        d = len(next(iter(flow.unit_coords.values())))
    if d is None:
        raise ValueError("flow: cannot tell its number of units; build it on [batch, D] first")
    return d


def _blocks(flow: Flow, d: int) -> tuple[list[str], list[int]]:
    """Factor names and block sizes (residual first) of a flow's latent code.

    No ``dimensions``: one block ``"latent"`` of size D.  ``dimensions`` without ``factors``:
    ``"residual"``, ``"factor1"``, ``"factor2"``, ...
    """
    if flow.dimensions is None:
        return ["latent"], [d]
    dims = [int(n) for n in flow.dimensions]
    if sum(dims) != d:
        raise ValueError(f"flow: its dimensions {dims} do not sum to its {d} units")
    if flow.factors is None:
        names = ["residual", *(f"factor{i}" for i in range(1, len(dims)))]
    else:
        names = [str(f) for f in flow.factors]
    return names, dims


def _factor_per_dim(names: Sequence[str], dims: Sequence[int]) -> np.ndarray:
    return np.repeat(np.asarray(list(names), dtype=str), list(dims))


def _flow_attrs(
    function: str, flow: Flow, names: Sequence[str], dims: Sequence[int]
) -> dict[str, Any]:
    """Provenance of a latent result: ``function`` ("flows.transform"...), the flow, its
    factors and their dimensions, the reference and the tmx version."""
    return provenance(
        "function",
        function,
        flow=str(flow.name),
        factors=[str(n) for n in names],
        dimensions=[int(n) for n in dims],
        reference=_REFERENCE,
    )


# -- the flow's values, without its log-determinants ---------------------------------------------
# ``transform``/``inverse`` only need T(x) (or T⁻¹(y)): the values below follow each layer's own
# arithmetic (the same elementwise ops on the same operands), without Keras's per-call
# machinery, the log-determinants nor the custom-gradient wrappers of the unit gathers.  The
# units travel in a working order instead of being gathered back into their own order after
# every layer: a permutation only relabels them, per-unit weights (ActNorm, Householder vectors)
# are read in the working order, and a coupling takes its two halves as slices when they are
# contiguous (a checkerboard flow gathers its units twice per call, on entry and on exit, where
# the layers one by one would gather five times per block).  Only the Householder reflections'
# sums over units run in another order, which rounds in the last bits.  Layers of other types
# (and networks other than plain Dense stacks) are called as they are, in the units' own order.
def _plain_dense(layer: Any, dtype: Any) -> bool:
    return (
        type(layer) is keras.layers.Dense
        and layer.quantization_mode is None
        and not layer.lora_enabled
        and layer.compute_dtype == layer.variable_dtype == dtype
    )


def _network_values(network: Any, dtype: Any) -> Any:
    """A binder of ``h ↦ network(h)``: a Sequential of plain Dense layers as its
    matmul/add/activation ops on the weights' values read once."""
    layers = list(getattr(network, "layers", []))
    if (
        type(network) is not keras.Sequential
        or not layers
        or not all(_plain_dense(la, dtype) for la in layers)
    ):
        return lambda: network

    def bind() -> Any:
        weights = [
            (la._kernel.value, None if la.bias is None else la.bias.value, la.activation)
            for la in layers
        ]

        def run(h: Any) -> Any:
            for kernel, bias, activation in weights:  # keras.layers.Dense.call
                h = tf.matmul(h, kernel)
                if bias is not None:
                    h = tf.add(h, bias)
                if activation is not None:
                    h = activation(h)
            return h

        return run

    return bind


def _gather_step(index: np.ndarray) -> Any:
    """A binder of ``x ↦ x[:, index]``."""
    const = tf.constant(index, tf.int32)
    return lambda: lambda x: tf.gather(x, const, axis=1)


def _in_order(weights: Any, order: np.ndarray | None) -> Any:
    """Per-unit ``weights`` (last axis: units) read in the working ``order`` (None: their own)."""
    return weights if order is None else tf.gather(weights, tf.constant(order, tf.int32), axis=-1)


def _actnorm_values(layer: Any, inverse: bool, dtype: Any, order: np.ndarray | None) -> Any:
    """ActNorm.call / _inverse (initialised: checked) on units in the working ``order``."""

    def bind() -> Any:
        loc = _in_order(tf.cast(layer.loc.value, dtype), order)
        log_scale = _in_order(tf.cast(layer.log_scale.value, dtype), order)
        if inverse:
            scale = tf.exp(log_scale)
            return lambda x: x * scale + loc
        scale = tf.exp(-log_scale)
        return lambda x: (x - loc) * scale

    return bind


def _householder_values(layer: Any, inverse: bool, dtype: Any, order: np.ndarray | None) -> Any:
    """Householder._reflect on units in the working ``order``."""
    reflections = range(layer.reflections - 1, -1, -1) if inverse else range(layer.reflections)

    def bind() -> Any:
        u = _in_order(layer._unit_vectors(dtype), order)
        rows = [u[r : r + 1] for r in reflections]

        def reflect(x: Any) -> Any:
            for u_r in rows:
                x = x - 2.0 * tf.reduce_sum(x * u_r, axis=1, keepdims=True) * u_r
            return x

        return reflect

    return bind


def _coupling_values(layer: Any, inverse: bool, dtype: Any, cond_first: bool) -> Any:
    """_Coupling.call / _inverse on units laid out as [conditioning, transformed] halves
    (``cond_first``) or [transformed, conditioning], each half in the layer's own order; the
    output keeps the layout."""
    kind = type(layer)
    bind_net = _network_values(layer.network, dtype)
    k, n = int(layer._cond.size), int(layer._trans.size)

    def bind() -> Any:
        net = bind_net()

        def coupling(x: Any) -> Any:
            x_c, x_t = (x[:, :k], x[:, k:]) if cond_first else (x[:, n:], x[:, :n])
            params = tf.cast(net(x_c), x.dtype)
            if kind is AdditiveCoupling:
                y_t = x_t - params if inverse else x_t + params
            else:
                s = layer.clamp * tf.tanh(params[:, :n] / layer.clamp)
                shift = params[:, n:]
                y_t = (x_t - shift) * tf.exp(-s) if inverse else x_t * tf.exp(s) + shift
            return tf.concat([x_c, y_t] if cond_first else [y_t, x_c], axis=1)

        return coupling

    return bind


def _layer_values(layer: Any, inverse: bool, dtype: Any) -> Any:
    """A binder of ``x ↦ y`` for one flow layer of another type (``y`` of ``call``, or ``x`` of
    ``inverse``), on units in their own order."""
    if type(layer) is Flow:
        return _flow_values(layer, inverse, dtype)
    if inverse:
        return lambda: lambda x: layer.inverse(x)[0]
    return lambda: lambda x: layer(x)[0]


def _flow_values(flow: Flow, inverse: bool, dtype: Any) -> Any:
    """A binder of ``x ↦ T(x)`` (or ``T⁻¹``): ``bind()`` reads the weights, once per job.

    ``order[i]`` is the unit held in column ``i`` of the working layout (the identity at entry
    and exit)."""
    layers = list(reversed(flow.flow_layers) if inverse else flow.flow_layers)
    d = _units(flow)
    identity = np.arange(d)
    order = identity
    binders: list[Any] = []

    def own() -> np.ndarray | None:
        return None if np.array_equal(order, identity) else order

    def relayout(target: np.ndarray) -> None:
        nonlocal order
        if not np.array_equal(order, target):
            binders.append(_gather_step(np.argsort(order, kind="stable")[target]))
            order = target

    for layer in layers:
        kind = type(layer)
        if kind in (ActNorm, Standardize):
            binders.append(_actnorm_values(layer, inverse, dtype, own()))
        elif kind is Householder:
            binders.append(_householder_values(layer, inverse, dtype, own()))
        elif kind is Permute:
            # y[:, j] = x[:, g[j]]: the same columns now hold other unit labels
            g = layer._inverse_indices if inverse else layer._indices
            order = np.argsort(g, kind="stable")[order]
        elif kind in (AdditiveCoupling, AffineCoupling):
            halves = np.concatenate([layer._trans, layer._cond])
            cond_first = not np.array_equal(order, halves)
            if cond_first:
                relayout(layer._order)
            binders.append(_coupling_values(layer, inverse, dtype, cond_first))
        else:
            relayout(identity)
            binders.append(_layer_values(layer, inverse, dtype))
    relayout(identity)

    def bind() -> Any:
        steps = [b() for b in binders]

        def run(x: Any) -> Any:
            for step in steps:
                x = step(x)
            return x

        return run

    return bind


# -- calls: eager for small jobs, XLA-compiled for large ones -------------------------------------
# XLA's trace and compile of a flow take about 0.3-1 s: more than the whole eager run of a small
# job (24,000 rows of a 16-unit flow: ~0.1 s), less than what compiled calls save on a large one.
# A call compiles when its rows times the flow's work per row reach _COMPILE_WORK (about 2 s of
# eager work on one core); the choice depends on the input's size only (never on timings or on
# earlier calls), so equal inputs always give equal numbers.  A caller's ``compile=`` True/False
# forces either path.  Every trace of a compiled function logs one DEBUG record on "tmx".
_COMPILE_WORK = 2e9


def _work(flow: Flow, d: int) -> int:
    """Multiply-adds per row, roughly: the coupling networks' weights and ~64 per unit and layer."""
    total = 0
    stack = list(flow.flow_layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "flow_layers", []))
        total += 64 * d
        network = getattr(layer, "network", None)
        if network is not None:
            total += sum(int(np.prod(w.shape)) for w in network.weights if len(w.shape) == 2)
    return total


class _Path:
    """The eager values of T or T⁻¹ on [rows, D] and their XLA-compiled function (made once)."""

    def __init__(self, flow: Flow, direction: str, d: int, rows: int) -> None:
        self.direction = direction
        self.bind = _flow_values(flow, direction == "inverse", flow.compute_dtype)
        self.spec = tf.TensorSpec((rows, d), flow.compute_dtype)
        self.compiled: Any = None
        self.lock = threading.Lock()

    def function(self) -> Any:
        """The compiled function, traced on first use (once, whatever thread)."""
        with self.lock:
            if self.compiled is None:
                bind, direction, spec = self.bind, self.direction, self.spec

                def run(x: Any) -> Any:
                    # runs once per trace (never per call): the record counts traces
                    log.debug(
                        "flows: tracing %s for shape %s (%s)",
                        direction,
                        tuple(spec.shape.as_list()),
                        spec.dtype.name,
                    )
                    return bind()(x)

                fn = tf.function(
                    run, input_signature=[self.spec], jit_compile=True, autograph=False
                )
                fn.get_concrete_function()
                self.compiled = fn
            return self.compiled


def _path(flow: Flow, direction: str, d: int, rows: int) -> _Path:
    """The path of ``x ↦ T(x)`` / ``y ↦ T⁻¹(y)`` on [rows, D], one per live flow, direction,
    shape and dtype.  The memo is keyed weakly by the flow; a path holds its layers, never the
    flow itself."""
    dtype = str(flow.compute_dtype)
    return memo(
        _COMPILED, flow, (direction, d, rows, dtype), lambda: _Path(flow, direction, d, rows)
    )


def _apply_rows(
    block: np.ndarray,
    *,
    flow: Flow,
    direction: str,
    batch_size: int,
    compiled: bool,
    progress: bool | Steps = False,
) -> np.ndarray:
    """Apply T or T⁻¹ to the rows of ``block`` (..., D), ``batch_size`` rows per call: eagerly,
    or (``compiled``) through the XLA-compiled function of the call shape (the last call padded);
    ``progress``: a bar over the calls, or a caller's bar (``Steps``) advanced once per call."""
    d = block.shape[-1]
    dtype = np.dtype(flow.compute_dtype)
    rows = np.ascontiguousarray(block, dtype=dtype).reshape(-1, d)
    out = np.empty_like(rows)
    n = rows.shape[0]
    if n:
        # fixed shapes: batch_size rows, or the power of two >= n when fewer (few compiles)
        call = _batching.call_rows(n, batch_size)
        path = _path(flow, direction, d, call)
        fn = path.function() if compiled else None
        values = None if compiled else path.bind()  # the weights, read once for the block
        with _bar(-(-n // call), progress) as bar:
            for start in range(0, n, call):
                chunk = rows[start : start + call]
                k = chunk.shape[0]
                if fn is None:
                    assert values is not None  # bound when not compiled
                    out[start : start + k] = values(tf.convert_to_tensor(chunk)).numpy()
                else:
                    out[start : start + k] = fn(_batching.pad_rows(chunk, call)).numpy()[:k]
                bar.advance()
    return out.reshape(block.shape)


def _bar(total: int, progress: bool | Steps) -> contextlib.AbstractContextManager[Steps]:
    """A bar over ``total`` calls (``progress`` a bool), or a caller's shared bar."""
    if isinstance(progress, Steps):
        return contextlib.nullcontext(progress)
    return steps(total, progress, unit="batch")


def _calls(rows: int, batch_size: int) -> int:
    """The calls ``_apply_rows`` makes for ``rows`` rows."""
    return -(-rows // _batching.call_rows(rows, batch_size)) if rows else 0


def _rows_of(arr: xr.DataArray, core: str) -> int:
    """Rows of a labeled array along everything but ``core``."""
    return arr.size // max(arr.sizes[core], 1)


def _lazy(arr: xr.DataArray) -> bool:
    return isinstance(arr.data, da.Array)


class _RowMap:
    """``block ↦ T(block)`` (or ``T⁻¹``) for dask, with a cheap token.

    dask would otherwise tokenize the flow by pickling it (a Keras save, ~1 s); the token is
    unique per call instead, so two graphs never share results, even for a retrained flow.
    """

    def __init__(
        self,
        flow: Flow,
        direction: str,
        batch_size: int,
        compiled: bool,
        progress: bool | Steps = False,
    ) -> None:
        self.flow = flow
        self.direction = direction
        self.batch_size = batch_size
        self.compiled = compiled
        self.progress = progress
        self.token = uuid.uuid4().hex

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return _apply_rows(
            block,
            flow=self.flow,
            direction=self.direction,
            batch_size=self.batch_size,
            compiled=self.compiled,
            progress=self.progress,
        )

    def __dask_tokenize__(self) -> tuple[str, str, str]:
        return ("tmx.flows.rows", self.direction, self.token)


def _map_last(
    flow: Flow,
    direction: str,
    arr: xr.DataArray,
    core: str,
    new: str,
    batch_size: int,
    progress: bool | Steps = False,
    compile: bool | None = None,
) -> xr.DataArray:
    """T or T⁻¹ along dim ``core`` (renamed ``new``), lazily for dask-backed arrays; a bar
    over the calls (``progress``, or a caller's bar) only when computed here (numpy-backed);
    XLA-compiled when ``compile``, or (None) when the job is large."""
    d = arr.sizes[core]
    lazy = isinstance(arr.data, da.Array)
    if lazy and arr.chunks is not None and len(arr.chunks[arr.get_axis_num(core)]) > 1:
        arr = arr.chunk({core: -1})
    rows = arr.size // max(d, 1)
    # the whole job's size decides, unless the caller forces a path
    compiled = rows * _work(flow, d) >= _COMPILE_WORK if compile is None else compile
    out = xr.apply_ufunc(
        _RowMap(flow, direction, batch_size, compiled, False if lazy else progress),
        arr,
        input_core_dims=[[core]],
        output_core_dims=[[new]],
        dask="parallelized",
        output_dtypes=[np.dtype(flow.compute_dtype)],
        dask_gufunc_kwargs={"output_sizes": {new: d}},
        keep_attrs=False,
    )
    order = [new if dim == core else dim for dim in arr.dims]
    return out.transpose(*order)


# -- inputs ----------------------------------------------------------------------------------------
def _as_labeled(value: Any, name: str, dim: str) -> xr.DataArray:
    """A DataArray with ``dim``; a 2-D array becomes (sample, dim)."""
    if isinstance(value, xr.Dataset):
        raise ValueError(f"{name} must be a DataArray with a {dim!r} dim; got a Dataset")
    if isinstance(value, xr.DataArray):
        if dim not in value.dims:
            raise ValueError(f"{name} must have a {dim!r} dim; got dims {value.dims}")
        arr = value
    else:
        data: da.Array | np.ndarray
        if isinstance(value, da.Array):
            data = value
        else:
            try:
                data = np.asarray(value)
            except Exception as err:  # pragma: no cover - exotic inputs
                raise ValueError(f"{name} must be an array [batch, D] or a DataArray") from err
        if data.ndim != 2:
            raise ValueError(
                f"{name} must be a [batch, D] array or a DataArray with a {dim!r} dim; got an "
                f"array of shape {data.shape}"
            )
        arr = xr.DataArray(data, dims=("sample", dim))
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}")
    return arr


def _check_units(flow: Flow, arr: xr.DataArray, name: str, d: int) -> None:
    n = arr.sizes["unit"]
    if n != d:
        raise ValueError(f"{name} has {n} units but the flow acts on {d}; they must match")
    if not flow.unit_coords:
        return
    for key, expected in flow.unit_coords.items():
        if key == "unit" or key not in arr.coords or arr[key].dims != ("unit",):
            continue
        got = np.asarray(arr[key].values)
        want = np.asarray(expected)
        if got.dtype.kind in "OSU" or want.dtype.kind in "OSU":
            same = np.array_equal(str_array(got), str_array(want))
        else:
            same = np.array_equal(got, want)
        if not same:
            bad = int(np.flatnonzero(str_array(got) != str_array(want))[0])
            raise ValueError(
                f"{name}: its unit coordinate {key!r} differs from the flow's (unit {bad}: "
                f"{got[bad]!r} vs {want[bad]!r}); pass the units the flow was trained on, in "
                "the same order"
            )


def _batch_size(batch_size: Any) -> int:
    return v.positive_int(batch_size, "batch_size")


def _compile(compile: Any) -> bool | None:
    """``compile=``: None (the job's size decides), else True or False."""
    return None if compile is None else v.flag(compile, "compile")


def _unit_coords(flow: Flow, d: int) -> dict[str, Any]:
    coords: dict[str, Any] = {}
    uc = flow.unit_coords or {}
    unit = np.asarray(uc["unit"]) if "unit" in uc else np.arange(d)
    coords["unit"] = ("unit", unit)
    for key, values in uc.items():
        if key == "unit":
            continue
        arr = np.asarray(values)
        if arr.dtype.kind in "OU":
            arr = str_array(arr)
        coords[key] = ("unit", arr)
    return coords


# -- public functions ------------------------------------------------------------------------------
def transform(
    flow: Flow,
    responses: Any,
    *,
    batch_size: int = 4096,
    progress: bool | None = None,
    compile: bool | None = None,
) -> xr.DataArray:
    r"""The latent code ``z̃ = T(z)`` of responses, labeled by factor.

    .. math::

        \tilde z = T(z) = (\tilde z_{F_0}, \tilde z_{F_1}, \dots), \qquad
        \tilde z_{F_k} \in \mathbb{R}^{N_k},\ \textstyle\sum_k N_k = D,

    the blocks contiguous, residual first (Esser, Rombach & Ommer 2020, arXiv:2004.13166).

    Parameters
    ----------
    flow : Flow
        A trained flow over ``D`` units.  Its data-initialised ``ActNorm`` layers must have seen
        data (``fit`` does it): otherwise a ``ValueError``, since the first batch would silently
        initialise them.
    responses : xarray.DataArray or array-like
        A DataArray with a ``unit`` dim of size ``D`` and any other dims (a cube
        ``(sample, transformation, unit)``, pairs ``(pair, unit)``, ``(sample, unit)``, in any
        order), or a ``[batch, D]`` array (labeled ``(sample, unit)``).  When the flow has
        ``unit_coords`` and ``responses`` carries unit coordinates of the same names, they must
        match (the positional ``unit`` index itself is not compared, since it depends on which
        cube the units were cut from).
    batch_size : int
        Rows per call of the flow.
    progress : bool or None, default None
        A progress bar over the flow's calls when they run here (numpy-backed ``responses``);
        None: when run interactively (a terminal, not under pytest or CI). A dask-backed
        ``responses`` gives a lazy result: nothing runs until it is computed (under dask's
        ``ProgressBar`` for a bar).
    compile : bool or None, default None
        Whether the flow's calls run XLA-compiled (``tf.function(jit_compile=True)``, traced
        once per flow, direction, batch shape and dtype, each trace logged at DEBUG on the
        ``"tmx"`` logger) or eagerly.  None: by the job's size (see Returns); True or False
        forces either path.  XLA's trace and compile cost about 0.3–1 s, which pays off on
        large jobs only.  Both paths compute the same map; only the last bits of float
        rounding differ (~1e-6 relative), so ``compile`` is not recorded in ``attrs``.

    Returns
    -------
    xarray.DataArray
        Named ``latent``, ``unit`` replaced by ``latent`` (same position, size ``D``, coord
        ``latent = 0..D−1``) with the coordinate ``factor`` on ``latent`` (each dimension's
        factor name; ``"latent"`` everywhere when the flow has no ``dimensions``); the other
        coordinates of ``responses`` are kept, unit coordinates are dropped.  dtype: the flow's
        compute dtype (float32).  attrs: ``flow``, ``factors``, ``dimensions``, ``reference``.
        **Lazy** when ``responses`` is dask-backed: one task per block (the ``unit`` axis is
        rechunked into one chunk), each running the flow in batches of ``batch_size``; the
        numbers do not depend on the chunking beyond float rounding (CPU matrix-product
        kernels round the last bits differently with the batch shape and a row's position in
        the batch: expect differences of a few units in the last place, ~1e-7 relative).
        Small jobs run eagerly; a job whose rows times the flow's work per row reach about
        2·10⁹ multiply-adds runs XLA-compiled (traced once per flow, direction and batch shape),
        which rounds differently in the last bits (~1e-6 relative); the choice depends on the
        job's size only (never on timings or earlier calls), unless ``compile`` forces it.
        Either path agrees with ``flow(x)[0]`` to float32 rounding, not bit for bit: the units
        travel through the layers in a working order (one gather on entry and one on exit,
        per-unit weights read in that order) instead of being gathered back after every
        layer, so the Householder reflections' sums over units round differently.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> f = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
    >>> _ = f(x)  # a first batch initialises the data-initialised ActNorm layers
    >>> z = flows.transform(f, x)
    >>> z.dims, z["factor"].values.tolist()
    (('sample', 'latent'), ['latent', 'latent'])
    >>> bool(np.allclose(flows.inverse(f, z).values, x, atol=1e-5))
    True
    """
    flow = _check_flow(flow)
    batch_size = _batch_size(batch_size)
    compile = _compile(compile)
    show = resolve_progress(progress)
    return _transform(flow, responses, "responses", batch_size, show, compile)


def _transform(
    flow: Flow,
    responses: Any,
    name: str,
    batch_size: int,
    progress: bool | Steps = False,
    compile: bool | None = None,
) -> xr.DataArray:
    d = _units(flow)
    arr = _as_labeled(responses, name, "unit")
    _check_units(flow, arr, name, d)
    names, dims = _blocks(flow, d)
    out = _map_last(flow, "forward", arr, "unit", "latent", batch_size, progress, compile)
    out = out.assign_coords(latent=np.arange(d), factor=("latent", _factor_per_dim(names, dims)))
    out.name = "latent"
    out.attrs = {"description": "latent code T(z) of an interpretation flow"}
    out.attrs.update(_flow_attrs("flows.transform", flow, names, dims))
    return out


def inverse(
    flow: Flow,
    z: Any,
    *,
    batch_size: int = 4096,
    progress: bool | None = None,
    compile: bool | None = None,
) -> xr.DataArray:
    r"""Map a latent code back to the layer's units: ``z = T⁻¹(z̃)``.

    Parameters
    ----------
    flow : Flow
        The flow that produced ``z`` (see :func:`transform`).
    z : xarray.DataArray or array-like
        A DataArray with a ``latent`` dim of size ``D`` (e.g. from :func:`transform`, possibly
        edited) or a ``[batch, D]`` array.  A ``factor`` coordinate, when present, must equal
        the flow's.
    batch_size : int
        Rows per call of the flow.
    progress : bool or None, default None
        A progress bar over the flow's calls when they run here (numpy-backed ``z``); None:
        when run interactively. A dask-backed ``z`` gives a lazy result (see
        :func:`transform`).
    compile : bool or None, default None
        XLA-compiled (True) or eager (False) calls of ``T⁻¹``; None: by the job's size (see
        :func:`transform`).  Not recorded in ``attrs``: the numbers differ by float rounding
        only.

    Returns
    -------
    xarray.DataArray
        Named ``activation``, ``latent`` replaced by ``unit`` with the unit coordinates
        restored from ``flow.unit_coords`` as in the cube: the index ``unit``
        (``unit_coords["unit"]``, else ``0..D−1``) and plain coordinates ``layer``,
        ``channel``, ``y``, ``x`` (whatever the flow recorded).  Other coordinates of ``z``
        are kept.  Lazy when ``z`` is dask-backed.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> f = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
    >>> _ = f(x)  # a first batch initialises the data-initialised ActNorm layers
    >>> z = flows.transform(f, x)
    >>> back = flows.inverse(f, z)
    >>> back.dims, bool(np.allclose(back.values, x, atol=1e-5))
    (('sample', 'unit'), True)
    """
    flow = _check_flow(flow)
    batch_size = _batch_size(batch_size)
    compile = _compile(compile)
    return _inverse(flow, z, batch_size, resolve_progress(progress), compile)


def _inverse(
    flow: Flow,
    z: Any,
    batch_size: int,
    progress: bool | Steps = False,
    compile: bool | None = None,
) -> xr.DataArray:
    d = _units(flow)
    arr = _as_labeled(z, "z", "latent")
    if arr.sizes["latent"] != d:
        raise ValueError(
            f"z has {arr.sizes['latent']} latent dimensions but the flow acts on {d} units"
        )
    names, dims = _blocks(flow, d)
    if "factor" in arr.coords and arr["factor"].dims == ("latent",):
        got = str_array(arr["factor"].values)
        if not np.array_equal(got, _factor_per_dim(names, dims)):
            raise ValueError(
                f"z: its factor coordinate does not match the flow's factors {names} with "
                f"dimensions {dims}; was z made by another flow?"
            )
    drop = [k for k, c in arr.coords.items() if "latent" in c.dims]
    arr = arr.drop_vars(drop)
    out = _map_last(flow, "inverse", arr, "latent", "unit", batch_size, progress, compile)
    out = out.assign_coords(_unit_coords(flow, d))
    out.name = "activation"
    out.attrs = {"description": "units T⁻¹(z̃) decoded by an interpretation flow"}
    out.attrs.update(_flow_attrs("flows.inverse", flow, names, dims))
    return out


def _factor_mask(z: xr.DataArray, factor: Any) -> tuple[list[str], np.ndarray]:
    """The factor names and a boolean mask over ``latent`` selecting them."""
    per_dim = str_array(z["factor"].values)
    valid = list(z.attrs.get("factors", list(dict.fromkeys(per_dim.tolist()))))
    wanted = [factor] if isinstance(factor, str) else factor
    if (
        not isinstance(wanted, Sequence | np.ndarray)
        or isinstance(wanted, bytes)
        or len(wanted) == 0
    ):
        raise ValueError(f"factor must be a factor name or a list of them; got {factor!r}")
    names: list[str] = []
    for f in wanted:
        if not isinstance(f, str) or f not in valid:
            raise ValueError(f"factor: unknown factor {f!r}; valid factors are {valid}")
        if f not in names:
            names.append(f)
    return names, np.isin(per_dim, names)


def _labeled_pair(a: Any, b: Any) -> tuple[xr.DataArray, xr.DataArray]:
    """a and b labeled, b in a's dim order."""
    a_arr = _as_labeled(a, "a", "unit")
    b_arr = _as_labeled(b, "b", "unit")
    if set(b_arr.dims) != set(a_arr.dims):
        raise ValueError(f"b must have the dims of a {a_arr.dims}; got {b_arr.dims}")
    b_arr = b_arr.transpose(*a_arr.dims)
    if b_arr.shape != a_arr.shape:
        raise ValueError(f"b must have the shape of a {a_arr.shape}; got {b_arr.shape}")
    return a_arr, b_arr


def _pair_job(
    flow: Any, a: Any, b: Any, batch_size: Any, compile: Any, progress: Any
) -> tuple[Flow, int, bool | None, bool, xr.DataArray, xr.DataArray, int, bool]:
    """The checked arguments of ``swap`` / ``interpolate``: (flow, batch_size, compile, show,
    a, b labeled, their rows, whether either is lazy)."""
    flow = _check_flow(flow)
    batch_size = _batch_size(batch_size)
    compile = _compile(compile)
    show = resolve_progress(progress)
    a_arr, b_arr = _labeled_pair(a, b)
    lazy = _lazy(a_arr) or _lazy(b_arr)
    return flow, batch_size, compile, show, a_arr, b_arr, _rows_of(a_arr, "unit"), lazy


def _pair(
    flow: Flow,
    a_arr: xr.DataArray,
    b_arr: xr.DataArray,
    batch_size: int,
    bar: Steps,
    compile: bool | None = None,
) -> tuple[xr.DataArray, xr.DataArray]:
    """(T(a), T(b) with T(a)'s dims and coordinates), the calls on ``bar``."""
    za = _transform(flow, a_arr, "a", batch_size, bar, compile)
    zb = _transform(flow, b_arr, "b", batch_size, bar, compile)
    # b's values on a's labels (no alignment: b's rows pair with a's rows by position)
    zb = za.copy(data=zb.transpose(*za.dims).data)
    return za, zb


def _pair_calls(a_arr: xr.DataArray, b_arr: xr.DataArray, batch_size: int) -> int:
    """The flow calls of T(a) and T(b) that run here (numpy-backed inputs)."""
    rows = _calls(_rows_of(a_arr, "unit"), batch_size)
    return (0 if _lazy(a_arr) else rows) + (0 if _lazy(b_arr) else rows)


def swap(
    flow: Flow,
    a: Any,
    b: Any,
    *,
    factor: str | Sequence[str],
    batch_size: int = 4096,
    progress: bool | None = None,
    compile: bool | None = None,
) -> xr.DataArray:
    r"""Replace factor blocks of ``a``'s latent code by ``b``'s and decode: a counterfactual.

    .. math::

        z_{\mathrm{swap}} = T^{-1}(\tilde z), \qquad
        \tilde z_F = T(b)_F \ (F \in \mathrm{factor}), \qquad
        \tilde z_G = T(a)_G \ \text{otherwise}

    (Esser, Rombach & Ommer 2020, arXiv:2004.13166, section 4: "what if a had b's factor F").

    Parameters
    ----------
    flow : Flow
        A trained flow with factor metadata (``factors``/``dimensions``).
    a, b : xarray.DataArray or array-like
        Responses with a ``unit`` dim, of equal dims and shape (``b`` is transposed to ``a``'s
        dim order); row ``i`` of ``b`` pairs with row ``i`` of ``a`` by position, and the
        result carries ``a``'s coordinates.
    factor : str or list of str
        The factor block(s) taken from ``b``; unknown names are a ``ValueError`` listing the
        valid ones (``transform(flow, a).attrs["factors"]``).
    batch_size : int
        Rows per call of the flow.
    progress : bool or None, default None
        One progress bar over the flow's calls that run here: T(a), T(b) and T⁻¹ of the
        edited code, ``batch_size`` rows each (numpy-backed inputs; a dask-backed one gives a
        lazy result, computed later under dask's ``ProgressBar`` for a bar).  None: when run
        interactively (a terminal, not under pytest or CI).  The numbers are the same with or
        without it.
    compile : bool or None, default None
        XLA-compiled (True) or eager (False) calls of the flow (T and T⁻¹); None: by each
        job's size (see :func:`transform`).  Not recorded in ``attrs``: the numbers differ by
        float rounding only.

    Returns
    -------
    xarray.DataArray
        Unit-space responses like :func:`inverse` (named ``activation``), with ``attrs``
        ``swapped`` (the factor names).  Lazy when ``a`` or ``b`` is dask-backed.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> f = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
    >>> _ = f(x)  # a first batch initialises the data-initialised ActNorm layers
    >>> f.factors, f.dimensions = ["residual", "angle"], [1, 1]
    >>> a, b = x[:3], x[3:]
    >>> out = flows.swap(f, a, b, factor="angle")
    >>> z, za, zb = (flows.transform(f, v).values for v in (out, a, b))
    >>> np.allclose(z[:, 0], za[:, 0], atol=1e-5), np.allclose(z[:, 1], zb[:, 1], atol=1e-5)
    (True, True)
    """
    flow, batch_size, compile, show, a_arr, b_arr, rows, lazy = _pair_job(
        flow, a, b, batch_size, compile, progress
    )
    log.info(
        "swap: factor %r of %d row(s) of %d unit(s)%s",
        factor,
        rows,
        a_arr.sizes["unit"],
        " (lazy)" if lazy else "",
    )
    total = _pair_calls(a_arr, b_arr, batch_size) + (0 if lazy else _calls(rows, batch_size))
    with steps(total, show, unit="batch") as bar:
        za, zb = _pair(flow, a_arr, b_arr, batch_size, bar, compile)
        names, mask = _factor_mask(za, factor)
        keep = xr.DataArray(mask, dims=("latent",))
        z = za.copy(data=xr.where(keep, zb, za).transpose(*za.dims).data)
        out = _inverse(flow, z, batch_size, bar, compile)
    out.attrs["function"] = "flows.swap"
    out.attrs["swapped"] = names
    out.attrs["formula"] = "T^-1(z~) with z~_F = T(b)_F for F in swapped, z~_G = T(a)_G otherwise"
    return out


# -- the rest of the model -------------------------------------------------------------------------
_ENDPOINT = re.compile(
    r"^(?P<path>.+?)(?:#(?P<call>\d+))?(?::(?P<link>input|output))?(?:\[(?P<index>\d+)\])?$"
)


def _descriptor(name: str) -> dict[str, Any]:
    """The endpoint descriptor of a cube's ``layer`` label (``tmx.inspect.Endpoint.name``)."""
    m = _ENDPOINT.match(name)
    if m is None:  # pragma: no cover - the pattern matches every non-empty string
        raise ValueError(f"flow: cannot parse the layer name {name!r}")
    return {
        "name": m["path"],
        "call": int(m["call"] or 0),
        "link": m["link"] or "output",
        "index": int(m["index"] or 0),
    }


def _flow_layer(flow: Flow) -> str:
    uc = flow.unit_coords or {}
    if "layer" not in uc:
        raise ValueError(
            "model: the flow does not record which layer its units come from "
            "(flow.unit_coords has no 'layer'); train it on a cube's units (tmx.flows.fit) or set "
            "flow.unit_coords"
        )
    layers = list(dict.fromkeys(str(la) for la in uc["layer"]))
    if len(layers) != 1:
        raise ValueError(
            f"model: the flow's units come from {len(layers)} layers {layers}; running the rest "
            "of the model needs the units of exactly one layer"
        )
    return layers[0]


def _rewired(model: Any, layer: str) -> tuple[Any, Any, tuple[int, ...], Any]:
    """(tail model, compiled tail, the layer's shape without batch, the tail's input specs)."""

    def build() -> tuple[Any, Any, tuple[int, ...], Any]:
        desc = _descriptor(layer)
        [endpoint] = _inspect.resolve(model, [desc])
        if any(s is None for s in endpoint.shape):
            raise ValueError(
                f"model: the output of layer {layer!r} has an unknown shape {endpoint.shape}"
            )
        _, tail = _inspect.rewire(model, desc)
        ref = weakref.ref(tail)

        @tf.function(reduce_retracing=True)
        def run(xs: Any, z: Any) -> Any:
            live = ref()
            assert live is not None  # the tail is held beside run (returned, memoised together)
            return live([*xs, z], training=False)

        shape = tuple(int(s) for s in endpoint.shape if s is not None)  # no None: checked above
        return tail, run, shape, tail.inputs[:-1]

    return memo(_REWIRED, model, ("tail", layer), build)


def _check_layout(flow: Flow, layer: str, shape: tuple[int, ...], d: int) -> None:
    if int(np.prod(shape)) != d:
        raise ValueError(
            f"model: layer {layer!r} has output shape {shape} ({int(np.prod(shape))} units) but "
            f"the flow acts on {d}; the flow must cover all of the layer's units"
        )
    if len(shape) > 3:
        return
    expected = unit_coords([layer], [shape])
    flow_coords = flow.unit_coords or {}
    for key in ("channel", "y", "x"):
        if key in flow_coords:
            got = np.asarray(flow_coords[key]).astype(np.int64)
            if not np.array_equal(got, expected[key]):
                raise ValueError(
                    f"model: the flow's units are not layer {layer!r}'s units in the cube's "
                    "(y, x, channel) order; the flow must cover the whole layer in that order"
                )


def _model_inputs(x: Any, specs: Any, rows: int, row_shape: tuple[int, ...]) -> list[np.ndarray]:
    """The model inputs per row: ``x`` reshaped to (rows, *input shape), or zeros."""
    shapes = [tuple(int(s) for s in spec.shape[1:]) for spec in specs]
    if any(None in s for s in (tuple(spec.shape[1:]) for spec in specs)):
        raise ValueError("model: its inputs must have a known shape (besides the batch axis)")
    if x is None:
        return [
            np.zeros((rows, *s), dtype=np.dtype(spec.dtype))
            for s, spec in zip(shapes, specs, strict=True)
        ]
    items = list(x) if isinstance(x, list | tuple) else [x]
    if len(items) != len(shapes):
        raise ValueError(
            f"x must give the model's {len(shapes)} input(s) (a list for several); got {len(items)}"
        )
    out = []
    for i, (item, s, spec) in enumerate(zip(items, shapes, specs, strict=True)):
        arr = np.asarray(item.values if isinstance(item, xr.DataArray) else item)
        if arr.shape == (*row_shape, *s) or arr.shape == (rows, *s):
            out.append(arr.reshape(rows, *s).astype(np.dtype(spec.dtype), copy=False))
        else:
            raise ValueError(
                f"x{'' if len(shapes) == 1 else f'[{i}]'} must have shape {(*row_shape, *s)} "
                f"(one model input per row of a) or {(rows, *s)}; got {arr.shape}"
            )
    return out


def _predict(
    run: Any, xs: list[np.ndarray], z: np.ndarray, batch_size: int, bar: Steps
) -> np.ndarray:
    parts = []
    for start in range(0, z.shape[0], batch_size):
        stop = start + batch_size
        y = run([x[start:stop] for x in xs], z[start:stop])
        if isinstance(y, list | tuple):
            raise ValueError("model: it has several outputs; interpolate needs a single output")
        y = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
        parts.append(y.reshape(y.shape[0], -1))
        bar.advance()
    return np.concatenate(parts, axis=0)


def interpolate(
    flow: Flow,
    a: Any,
    b: Any,
    *,
    factor: str | Sequence[str],
    steps: int = 8,
    model: Any = None,
    x: Any = None,
    batch_size: int = 256,
    progress: bool | None = None,
    compile: bool | None = None,
) -> xr.DataArray | xr.Dataset:
    r"""Walk factor blocks of ``a``'s latent code towards ``b``'s, decoded at each step.

    For :math:`\alpha \in \mathrm{linspace}(0, 1, \mathrm{steps})`:

    .. math::

        \tilde z(\alpha)_F = (1 - \alpha)\, T(a)_F + \alpha\, T(b)_F \ (F \in \mathrm{factor}),
        \qquad \tilde z(\alpha)_G = T(a)_G \ \text{otherwise}, \qquad
        z(\alpha) = T^{-1}(\tilde z(\alpha)),

    so ``α = 0`` gives ``a`` back (up to the flow's round trip) and ``α = 1`` is
    :func:`swap` (Esser, Rombach & Ommer 2020, arXiv:2004.13166).

    Parameters
    ----------
    flow : Flow
        A trained flow with factor metadata.
    a, b : xarray.DataArray or array-like
        Responses with a ``unit`` dim, of equal dims and shape, paired row by row (see
        :func:`swap`).
    factor : str or list of str
        The factor block(s) interpolated; the others stay ``a``'s.
    steps : int
        Number of values of α (``steps = 1`` gives α = 0 only).
    model : keras.Model, optional
        The model the units come from.  When given, the rest of the model is run from the
        flow's layer: the layer is the single name in ``flow.unit_coords["layer"]`` (a cube
        ``layer`` label such as ``"h"``, ``"block/conv"``, ``"add:input"``; a ``ValueError``
        when the flow covers several layers or records none), ``tmx.inspect.rewire`` cuts the
        model there, and the tail receives each decoded ``z(α)`` reshaped (C order, the cube's
        (y, x, channel) order) to the layer's output shape.  The flow must cover the whole
        layer in the cube's unit order.  Functional and Sequential models only, with a single
        output.
    x : array-like or list of array-like, optional
        The model inputs of ``a``'s rows (one per row of ``a``: shape ``(*a's other dims,
        *input shape)`` in ``a``'s dim order with ``unit`` moved last, or ``(rows, *input
        shape)``; a list for several inputs).  They only matter for branches of the model that
        bypass the flow's layer (skip connections) and for layers after the cut that read the
        inputs.  ``None``: zeros, i.e. **bypassing branches then see all-zero inputs**, which
        is exact only for models whose output depends on the input solely through the layer
        (e.g. Sequential models).
    batch_size : int
        Rows per call of the flow and of the model.
    progress : bool or None, default None
        One progress bar over the calls that run here: the flow's T(a), T(b) and T⁻¹ of the
        ``steps`` edited codes, then (with ``model``) the model's ``steps`` passes, all of
        ``batch_size`` rows.  Dask-backed inputs give a lazy result without ``model``; with
        ``model`` they are computed here, under dask's ``ProgressBar`` when ``progress``.
        None: when run interactively (a terminal, not under pytest or CI).  The numbers are
        the same with or without it.
    compile : bool or None, default None
        XLA-compiled (True) or eager (False) calls of the flow (T and T⁻¹; the model's tail
        is a ``tf.function`` either way); None: by each job's size (see :func:`transform`).
        Not recorded in ``attrs``: the numbers differ by float rounding only.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Without ``model``: the decoded units (named ``activation``) with a new leading dim
        ``step`` (coordinate ``alpha``), ``a``'s other dims and coordinates and the unit
        coordinates of :func:`inverse`; lazy when ``a`` or ``b`` is dask-backed.  With
        ``model``: a computed Dataset with ``activation`` (step, …, unit) and ``prediction``
        (step, …, output), ``output`` being the model output's last axis (other output axes
        are flattened into it, C order).

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> f = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
    >>> _ = f(x)  # a first batch initialises the data-initialised ActNorm layers
    >>> f.factors, f.dimensions = ["residual", "angle"], [1, 1]
    >>> a, b = x[:3], x[3:]
    >>> walk = flows.interpolate(f, a, b, factor="angle", steps=3)
    >>> walk.dims, walk["alpha"].values
    (('step', 'sample', 'unit'), array([0. , 0.5, 1. ]))
    >>> bool(np.allclose(walk.isel(step=0).values, a, atol=1e-5))  # α = 0 gives a back
    True
    """
    steps = v.positive_int(steps, "steps")
    flow, batch_size, compile, show, a_arr, b_arr, rows, lazy = _pair_job(
        flow, a, b, batch_size, compile, progress
    )
    log.info(
        "interpolate: factor %r of %d row(s) of %d unit(s) in %d step(s)%s%s",
        factor,
        rows,
        a_arr.sizes["unit"],
        steps,
        "" if model is None else ", then the model's tail",
        " (lazy)" if lazy and model is None else "",
    )
    total = _pair_calls(a_arr, b_arr, batch_size)
    total += 0 if lazy else _calls(steps * rows, batch_size)  # T⁻¹ of the steps' codes
    if model is not None:
        total += steps * -(-rows // batch_size)
    with _bar(total, show) as bar:  # (``steps`` is the argument here, not the bar's maker)
        return _interpolate(
            flow, a_arr, b_arr, factor, steps, model, x, batch_size, bar, show, compile
        )


def _interpolate(
    flow: Flow,
    a_arr: xr.DataArray,
    b_arr: xr.DataArray,
    factor: Any,
    steps: int,
    model: Any,
    x: Any,
    batch_size: int,
    bar: Steps,
    show: bool,
    compile: bool | None = None,
) -> xr.DataArray | xr.Dataset:
    """``interpolate``'s work, every call here on ``bar`` (a dask computation under dask's
    bar when ``show``)."""
    za, zb = _pair(flow, a_arr, b_arr, batch_size, bar, compile)
    names, mask = _factor_mask(za, factor)
    alpha = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    al = xr.DataArray(alpha.astype(za.dtype), dims=("step",))
    keep = xr.DataArray(mask, dims=("latent",))
    mixed = (1 - al) * za + al * zb
    z = xr.where(keep, mixed, za).transpose("step", *za.dims)
    z = z.assign_coords(step=np.arange(steps), alpha=("step", alpha))
    z.attrs = dict(za.attrs)
    activation = _inverse(flow, z, batch_size, bar, compile)
    activation.attrs["function"] = "flows.interpolate"
    activation.attrs["interpolated"] = names
    activation.attrs["formula"] = (
        "T^-1(z~(alpha)), z~(alpha)_F = (1 - alpha) T(a)_F + alpha T(b)_F for F in "
        "interpolated, z~_G = T(a)_G otherwise"
    )
    if model is None:
        return activation

    model = load_model(model)
    d = _units(flow)
    layer = _flow_layer(flow)
    _, run, shape, specs = _rewired(model, layer)
    _check_layout(flow, layer, shape, d)
    row_dims = [dim for dim in a_arr.dims if dim != "unit"]
    row_shape = tuple(a_arr.sizes[dim] for dim in row_dims)
    rows = int(np.prod(row_shape, dtype=np.int64))
    xs = _model_inputs(x, specs, rows, row_shape)
    with dask_bar(show and _lazy(activation)):
        act = activation.transpose("step", *row_dims, "unit").compute()
    values = np.asarray(act.values)
    preds = []
    for s in range(steps):
        zs = values[s].reshape(rows, *shape)
        preds.append(_predict(run, xs, zs, batch_size, bar))
    pred = np.stack(preds).reshape(steps, *row_shape, -1)
    row_coords = {k: c for k, c in act.coords.items() if set(c.dims) <= {"step", *row_dims}}
    prediction = xr.DataArray(
        pred,
        dims=("step", *row_dims, "output"),
        coords={**row_coords, "output": np.arange(pred.shape[-1])},
        name="prediction",
        attrs={"description": f"model output from layer {layer!r} on the decoded units"},
    )
    attrs = dict(activation.attrs)
    attrs.update(
        {
            "layer": layer,
            "model": str(model.name),
            "bypass_inputs": "zeros" if x is None else "x",
        }
    )
    return xr.Dataset({"activation": act, "prediction": prediction}, attrs=attrs)
