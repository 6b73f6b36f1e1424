"""Training an interpretation flow on pairs: ``tmx.flows.fit``.

The pairs come from ``tmx.flows.pairs`` (lazy gathers from a cube). They are materialised
once, in one pass over the cube: in memory when they fit in ``memory`` bytes, otherwise
into a temporary Zarr store that every epoch streams in blocks (a ``tf.data`` pipeline with a
reading thread), so a cube larger than memory trains without being loaded whole.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import keras
import numpy as np
import tensorflow as tf
import xarray as xr
import zarr

from .. import _deprecation
from .. import _validate as v
from .._batching import pad_rows, parse_memory
from .._progress import Steps
from .._progress import resolve as resolve_progress
from .._provenance import provenance
from .._schema import UNIT_COORDS
from . import _build
from ._loss import check_pairs, factor_dimensions, factor_loss
from .layers import Standardize, dead_or_constant

__all__ = ["fit"]

log = logging.getLogger("tmx")

DEFAULT_MEMORY_LIMIT = 512 * 2**20
_SCALE_RANGE = (1e-3, 1e3)  # unit scales a flow without Standardize is allowed to train on
_EVAL_ROWS = 1024  # held-out pairs per compiled evaluation call


# -- arguments ---------------------------------------------------------------------------------
def _check_pairs(pairs: Any) -> tuple[list[str], int]:
    factors = check_pairs(pairs)
    for name in ("a", "b"):
        if pairs[name].dtype.kind != "f":
            raise ValueError(f"pairs.{name} must be floating point; got {pairs[name].dtype}")
    if "rho" not in pairs.data_vars or set(pairs["rho"].dims) != {"pair", "factor"}:
        raise ValueError("pairs must have a data variable 'rho' with dims (pair, factor)")
    if pairs.sizes["pair"] < 2:
        raise ValueError(f"pairs must hold at least 2 pairs; got {pairs.sizes['pair']}")
    return factors, int(pairs.sizes["unit"])


def _check_dimensions(dimensions: Any, factors: list[str], units: int, pairs: Any) -> list[int]:
    if isinstance(dimensions, str):
        if dimensions != "estimate":
            raise ValueError(
                f"dimensions must be 'estimate', a list in factor order or a dict by factor "
                f"name; got {dimensions!r}"
            )
        return [int(d) for d in factor_dimensions(pairs).values]
    if isinstance(dimensions, xr.DataArray):
        dimensions = dimensions.values.tolist()
    if isinstance(dimensions, Mapping):
        unknown = sorted(set(map(str, dimensions)) - set(factors))
        if unknown:
            raise ValueError(
                f"dimensions: unknown factor name(s) {unknown}; the factors are {factors}"
            )
        missing = [f for f in factors if f not in dimensions]
        if missing:
            raise ValueError(f"dimensions: no size for factor(s) {missing}")
        dimensions = [dimensions[f] for f in factors]
    dims = list(v.int_vector(dimensions, "dimensions"))
    if len(dims) != len(factors):
        raise ValueError(
            f"dimensions must have one entry per factor {factors} (residual first); got {dims}"
        )
    if any(d < 0 for d in dims) or sum(dims) != units:
        raise ValueError(
            f"dimensions must be non-negative and sum to the number of units ({units}); "
            f"got {dims} (sum {sum(dims)})"
        )
    return dims


def _unit_coords(pairs: xr.Dataset) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in (*UNIT_COORDS, "unit"):
        if name in pairs.coords and pairs[name].dims == ("unit",):
            out[name] = np.asarray(pairs[name].values).tolist()
    return out


# -- the pairs, materialised once ------------------------------------------------------------
class _Arrays:
    """Rows [start, stop) of the pairs' a, b (numpy or zarr arrays, read a block at a time)
    and their ρ."""

    def __init__(
        self, a: Any, b: Any, rho: np.ndarray, start: int, stop: int, dtype: Any = np.float32
    ) -> None:
        self.a, self.b, self.rho, self.start, self.stop = a, b, rho, start, stop
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return self.stop - self.start

    def rows(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows lo..hi (relative), one contiguous read."""
        s = slice(self.start + lo, self.start + hi)
        return (
            np.asarray(self.a[s], self.dtype),
            np.asarray(self.b[s], self.dtype),
            self.rho[s],
        )


def _materialise(
    pairs: xr.Dataset, memory: int, dtype: Any = np.float32
) -> tuple[np.ndarray | Any, np.ndarray | Any, str, str | None]:
    """a and b as numpy (in memory) or zarr arrays (spilled, in ``dtype``), computed in one
    pass."""
    dtype = np.dtype(dtype)
    a = pairs["a"].transpose("pair", "unit")
    b = pairs["b"].transpose("pair", "unit")
    if a.chunks is None and b.chunks is None:
        return np.asarray(a.values), np.asarray(b.values), "memory", None
    nbytes = a.size * dtype.itemsize * 2
    if nbytes <= memory:
        a_np, b_np = dask.compute(a.data, b.data)
        return np.asarray(a_np), np.asarray(b_np), "memory", None
    tmp = tempfile.mkdtemp(prefix="tmx-flow-pairs-")
    log.info(
        "fit: the pairs take %d bytes (> memory = %d): spilling them to Zarr in %s",
        nbytes,
        memory,
        tmp,
    )
    rows = max(1, min(a.sizes["pair"], (16 * 2**20) // max(1, a.sizes["unit"] * dtype.itemsize)))
    stores = []
    for name, arr in (("a", a), ("b", b)):
        z = zarr.open_array(
            f"{tmp}/{name}.zarr",
            mode="w",
            shape=arr.shape,
            chunks=(rows, arr.sizes["unit"]),
            dtype=dtype.name,
        )
        stores.append((arr.data.astype(dtype).rechunk((rows, -1)), z))
    # dask's Array does not match numpy's ArrayLike protocol in dask's own annotation of store
    da.store([s for s, _ in stores], [z for _, z in stores], lock=False)  # type: ignore[misc]
    return stores[0][1], stores[1][1], "zarr", tmp


def _batches(
    arrays: _Arrays, batch: int, rng: np.random.Generator, block: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Full batches of shuffled rows, one epoch: blocks in random order, rows shuffled within
    a block (every row once; the last partial batch is dropped)."""
    n = len(arrays)
    starts = np.arange(0, n, block)
    carry: tuple[np.ndarray, ...] | None = None  # fewer than `batch` rows left over
    for s in rng.permutation(starts):
        a, b, r = arrays.rows(int(s), min(n, int(s) + block))  # one contiguous read
        perm = rng.permutation(len(r))
        a, b, r = a[perm], b[perm], r[perm]
        if carry is not None:
            a, b, r = (np.concatenate([c, x]) for c, x in zip(carry, (a, b, r), strict=True))
        full = (len(r) // batch) * batch
        for i in range(0, full, batch):  # offset slices: linear in the block
            yield a[i : i + batch], b[i : i + batch], r[i : i + batch]
        carry = (a[full:], b[full:], r[full:])


def _unit_statistics(arrays: _Arrays, limit: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit mean and standard deviation (ddof 0, float64) of the first ``limit`` rows of
    ``a`` and ``b`` pooled (the pairs are in random order: a random sample), read in blocks of
    at most 32 MiB and accumulated around the first row (no cancellation for large means)."""
    stop = min(len(arrays), limit)
    units = int(arrays.a.shape[1])
    step = max(1, (32 * 2**20) // max(1, 8 * units))
    shift = None
    s1 = np.zeros(units)
    s2 = np.zeros(units)
    for lo in range(0, stop, step):
        a, b, _ = arrays.rows(lo, min(stop, lo + step))
        for x in (a, b):
            x = x.astype(np.float64)
            if shift is None:
                shift = x[0].copy()
            x -= shift
            s1 += x.sum(axis=0)
            s2 += np.square(x).sum(axis=0)
    n = 2.0 * stop
    assert shift is not None  # the pairs hold at least one row
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite values: refused next
        centred = s1 / n
        return shift + centred, np.sqrt(np.maximum(s2 / n - centred**2, 0.0))


def _check_finite(mean: np.ndarray, std: np.ndarray) -> None:
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
        raise ValueError(
            f"pairs: a or b hold NaN or infinite values (units {bad[:5].tolist()}, ...); "
            "remove them from the cube before fitting"
        )


def _check_scale(mean: np.ndarray, std: np.ndarray) -> None:
    """Refuse units of a scale far from 1 for a flow that does not standardise them."""
    live = ~dead_or_constant(mean, std)
    rms = float(np.sqrt(np.mean(std[live] ** 2))) if np.any(live) else 0.0
    offset = float(np.max(np.abs(mean)))
    if not (_SCALE_RANGE[0] <= rms <= _SCALE_RANGE[1]) or offset > _SCALE_RANGE[1]:
        raise ValueError(
            f"pairs: the units' standard deviations are {rms:.3g} (RMS over the {int(live.sum())} "
            f"live units) and their largest |mean| is {offset:.3g}, far from the scale 1 that a "
            f"flow without a Standardize layer trains on (Adam moves every weight by about "
            f"learning_rate per step, so such a flow diverges). Use a flow that starts with "
            f"tmx.flows.layers.Standardize: tmx.flows.flow(units) (the default, standardize=True) "
            f"or flow=None; or rescale the units to standard deviations within "
            f"[{_SCALE_RANGE[0]:g}, {_SCALE_RANGE[1]:g}] and means within ±{_SCALE_RANGE[1]:g}"
        )


def _standardize_layer(flow: Any) -> Any:
    """The flow's first layer when it is a ``Standardize``, else None."""
    layers = list(getattr(flow, "flow_layers", []) or [])
    return layers[0] if layers and isinstance(layers[0], Standardize) else None


def _not_finite(what: str, value: float, epoch: int, detail: str = "") -> FloatingPointError:
    return FloatingPointError(
        f"fit: {what} is {value} in epoch {epoch}{detail}; training stopped. The pairs may hold "
        "non-finite values, or training diverged: lower learning_rate, keep the flow's "
        "Standardize layer (tmx.flows.flow(units), the default), or keep jitter > 0"
    )


# -- fit ---------------------------------------------------------------------------------------
def fit(
    pairs: xr.Dataset,
    *,
    dimensions: Any = "estimate",
    flow: Any = None,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    validation: float = 0.1,
    semantics: str = "gyoza",
    seed: int = 0,
    progress: bool | None = None,
    patience: int | None = None,
    memory: int | str | None = None,
    jitter: float = 0.01,
    jit: bool = True,
    dtype: Any = None,
    memory_limit: Any = _deprecation.UNSET,
) -> tuple[Any, xr.Dataset]:
    r"""Train an interpretation flow T on pairs with the factor loss (Adam).

    Each step takes a batch of pairs (a, b) with their ρ, computes z̃ = T(a), T(b) and the
    log-determinants, and minimises the mean ``factor_loss`` (float64 inside):

    .. math::

        \ell = \tfrac12 \lVert \tilde z_a \rVert^2
             + \tfrac12 \sum_d \Big[\frac{(\tilde z_{b,d} - \rho_d \tilde z_{a,d})^2}{1 - \rho_d^2}
             + \log(1 - \rho_d^2)\Big] - j_a - j_b

    (Esser, Rombach & Ommer 2020, arXiv:2004.13166; ``docs/flows.md``).

    **Standardisation.**  The default flow starts with a fixed
    :class:`~tmx.flows.layers.Standardize` layer, which ``fit`` sets (unless it already is) from
    the per-unit mean and standard deviation of the training pairs (``a`` and ``b`` pooled, up
    to 10,000 rows of each, float64); dead and constant units map to 0.  The trainable layers
    thus always see units of scale 1, whatever the layer's scale (a MobileNetV2 pooling layer
    with random weights has responses of ~1e-12, on which an unstandardised flow diverges to
    NaN).  The statistics are weights of the returned flow, so :func:`transform`,
    :func:`inverse` and a saved and loaded flow apply exactly the same map.  A ``flow`` without
    a ``Standardize`` first layer (``preset="gyoza"``, ``standardize=False``, your own) is
    refused with a ``ValueError`` when the units' RMS standard deviation lies outside
    [1e-3, 1e3] or a mean outside ±1e3.

    **Divergence.**  A non-finite training loss (checked every step), validation loss or
    inversion error stops training with a ``FloatingPointError`` naming the epoch; NaN is never
    reported as a number.

    **Compilation.**  A fit compiles two functions, each traced once: the training step (fixed
    batches of ``batch_size`` pairs, ``a`` and ``b`` stacked through one call of the flow) and
    the held-out evaluation (fixed blocks of up to 1024 pairs, the last one padded; the clean
    and jittered responses through one call of the flow and one of its inverse). Tracing and
    compiling take seconds for the default 8-block flow, whatever the number of units or
    epochs; ``jit=False`` skips XLA's compilation, for short fits.

    **Computes.**  Training needs the values: the pairs are computed once (in memory, or
    spilled to Zarr above ``memory``), and the flow and history are in memory. What a run does
    (the split, a spill, every epoch's losses, early stopping) is logged on the ``tmx`` logger
    (``logging.getLogger("tmx")``: INFO for the run, DEBUG per epoch).

    Parameters
    ----------
    pairs : xarray.Dataset
        From ``tmx.flows.pairs``: ``a``, ``b`` (pair, unit), ``rho`` (pair, factor). Pairs are
        in random order there; the last ``validation`` fraction is held out.
    dimensions : "estimate", sequence of int or dict
        The factor block sizes (residual first), summing to the unit count: ``"estimate"`` =
        ``tmx.flows.factor_dimensions(pairs)``, a list in factor order, or a dict by name.
    flow : tmx.flows.Flow, optional
        The flow to train (its weights are updated in place); default
        ``tmx.flows.flow(units, seed=seed, dtype=dtype)`` (which starts with ``Standardize``).
    epochs : int
        Passes over the training pairs.
    batch_size : int
        Pairs per step; every step has exactly this many (the epoch's last partial batch is
        dropped, and a different one each epoch since the order is reshuffled), so the
        compiled step is traced once. Fewer training pairs than ``batch_size``: one batch of
        all of them.
    learning_rate : float
        Adam's step size.
    validation : float in [0, 1)
        Fraction of pairs held out for ``val_loss`` and ``invert_error``.
    semantics : {"gyoza", "iin"}
        The factor loss's form (identical gradients; see ``factor_loss``).
    seed : int
        Seeds the default flow's weights and the shuffling: the same seed gives the same flow
        and history.
    progress : bool or None, default None
        A progress bar over epochs, with each epoch's losses; None: when run interactively (a
        terminal, not under pytest or CI).
    patience : int, optional
        Early stopping: stop when ``val_loss`` (``loss`` without validation) has not improved
        for ``patience`` epochs, and restore the best epoch's weights.
    memory : int or str, optional
        Bytes of pairs held in memory (an int, or a size such as ``"512MB"``; default 512 MiB);
        above it a dask-backed ``pairs`` is written once to a temporary Zarr store and streamed
        from there every epoch.
    jitter : float
        Dequantisation: every batch's a and b get fresh Gaussian noise (seeded; the validation
        pairs get fixed draws) of standard deviation σ = jitter in standardised units (each
        unit's σ = jitter × its standard deviation; jitter itself for dead units, which
        ``Standardize`` maps to 0) when the flow starts with ``Standardize``, else σ = jitter ×
        RMS of the units' standard deviations. Without it, a dead or constant unit, or a ReLU
        unit's point mass at 0, has infinite density, and the loss can fall without bound by
        stretching it (−log|det J| → −∞). 0 disables it.
    jit : bool
        Compile the training step with XLA (faster steps, a few seconds more to compile); any
        layer width compiles.
    dtype : str or keras.DTypePolicy, optional
        dtype of the default flow (``"float64"`` for a float64 run); ``None`` = Keras's global
        policy (``keras.config.set_dtype_policy``).  With ``flow`` given, its compute dtype is
        used and a different ``dtype`` is a ``ValueError``.  The pairs are fed in the flow's
        compute dtype; the loss is float64 in any case.
    memory_limit : int
        Deprecated name of ``memory`` (warns).

    Returns
    -------
    flow : tmx.flows.Flow
        Trained, with ``factors``, ``dimensions`` and ``unit_coords`` set (saved with it).
    history : xarray.Dataset
        Over ``epoch`` (1, 2, …): ``loss`` = the mean of the epoch's batch losses (each the
        mean pair loss of the batch, at the weights the batch was trained from — the true
        training loss, never 0.0), ``val_loss`` = the mean pair loss of the held-out pairs
        after the epoch (NaN without validation), ``invert_error`` = max |T⁻¹(T(a)) − a| over
        up to 1024 held-out pairs (training pairs without validation), ``seconds`` = the
        epoch's wall time. ``attrs``: the options, n_train, n_val, factors, dimensions,
        best_epoch, stopped_early, source ("memory" or "zarr"), standardized (1 when the flow
        starts with ``Standardize``), noise_std (σ, in standardised units when standardized),
        dtype (the flow's compute dtype).

    Raises
    ------
    FloatingPointError
        When the loss, the validation loss or the inversion error is not finite (the message
        names the epoch).
    ValueError
        Bad arguments; non-finite pairs; units far from scale 1 for a flow without
        ``Standardize``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import flows
    >>> rng = np.random.default_rng(0)
    >>> cube = xr.DataArray(
    ...     rng.normal(size=(16, 4, 2)).astype("float32"),
    ...     dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["h", "h"])},
    ... )
    >>> pr = flows.pairs(cube, "sample", n=64, seed=0)
    >>> small = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    >>> flow, history = flows.fit(
    ...     pr, dimensions=[1, 1], flow=small, epochs=2, batch_size=16, jit=False, progress=False
    ... )
    >>> history.sizes["epoch"], history.attrs["dimensions"], flow.factors
    (2, [1, 1], ['residual', 'sample'])
    >>> bool(np.isfinite(history["loss"]).all())
    True
    """
    memory = _deprecation.renamed("fit", "memory_limit", "memory", memory_limit, memory, None)
    factors, units = _check_pairs(pairs)
    opts = _check_options(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        validation=validation,
        semantics=semantics,
        seed=seed,
        progress=progress,
        patience=patience,
        memory=memory,
        jitter=jitter,
        jit=jit,
    )
    flow = _check_flow(flow, units, opts.seed, _build.check_dtype(dtype))
    work_dtype = np.dtype(str(flow.compute_dtype))
    rho = _check_rho(pairs)

    a_all, b_all, source, tmpdir = _materialise(pairs, opts.memory, work_dtype)
    try:
        dims = _dimensions(dimensions, factors, units, pairs, a_all, b_all, source)
        flow.factors = list(factors)
        flow.dimensions = list(dims)
        flow.unit_coords = _unit_coords(pairs) or None
        split = _split(a_all, b_all, rho, opts, source, work_dtype)
        log.info(
            "fit: %d units, factors %s with dimensions %s; %d training and %d held-out pairs "
            "(%s), %d epochs of batches of %d",
            units,
            factors,
            dims,
            split.train_rows,
            split.held_rows,
            source,
            opts.epochs,
            split.batch,
        )
        noise = _prepare_flow(flow, split.train, split.batch, opts.jitter, work_dtype)
        steps = _Compiled(flow, split, dims, len(factors), opts, noise, work_dtype)
        history = _train(flow, steps, split, opts, source)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return flow, _history(history, opts, split, factors, dims, source, noise, work_dtype)


# -- fit: arguments ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """The checked options of one fit."""

    epochs: int
    batch_size: int
    learning_rate: float
    validation: float
    semantics: str
    seed: int
    progress: bool
    patience: int | None
    memory: int
    jitter: float
    jit: bool


def _check_options(
    *,
    epochs: Any,
    batch_size: Any,
    learning_rate: Any,
    validation: Any,
    semantics: Any,
    seed: Any,
    progress: Any,
    patience: Any,
    memory: Any,
    jitter: Any,
    jit: Any,
) -> _Options:
    """The options checked in order, each error naming its argument."""
    epochs = v.positive_int(epochs, "epochs")
    batch_size = v.positive_int(batch_size, "batch_size")
    learning_rate = v.finite_real(learning_rate, "learning_rate")
    if learning_rate < 0:
        raise ValueError(f"learning_rate must be >= 0; got {learning_rate}")
    validation = v.fraction(validation, "validation", low_open=False)
    semantics = v.choice(semantics, "semantics", ("gyoza", "iin"))
    seed = v.seed(seed)
    progress = resolve_progress(progress)
    if patience is not None:
        patience = v.positive_int(patience, "patience")
    memory = parse_memory(memory, "memory", default=DEFAULT_MEMORY_LIMIT)
    jitter = v.finite_real(jitter, "jitter")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0; got {jitter}")
    jit = v.flag(jit, "jit")
    return _Options(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        validation=validation,
        semantics=semantics,
        seed=int(seed),
        progress=progress,
        patience=patience,
        memory=memory,
        jitter=jitter,
        jit=jit,
    )


def _check_flow(flow: Any, units: int, seed: int, dtype: Any) -> Any:
    """The flow to train: the default one (``tmx.flows.flow(units)``) or the caller's, checked."""
    if flow is None:
        return _build.flow(units, seed=seed, dtype=dtype)
    if not (callable(getattr(flow, "inverse", None)) and callable(flow)):
        raise ValueError(
            f"flow must be a tmx.flows.Flow (call and inverse); got {type(flow).__name__}"
        )
    if dtype is not None and keras.dtype_policies.get(dtype).compute_dtype != str(
        flow.compute_dtype
    ):
        raise ValueError(
            f"dtype={dtype!r} differs from the flow's compute dtype {flow.compute_dtype!r}; "
            "build the flow with tmx.flows.flow(..., dtype=...) or leave dtype out"
        )
    return flow


def _check_rho(pairs: xr.Dataset) -> np.ndarray:
    rho = np.asarray(pairs["rho"].transpose("pair", "factor").values, np.float64)
    if not np.all((rho >= 0) & (rho < 1)):
        raise ValueError("rho must lie in [0, 1) for every pair and factor (pairs.rho)")
    return rho


def _dimensions(
    dimensions: Any, factors: list[str], units: int, pairs: xr.Dataset, a: Any, b: Any, source: str
) -> list[int]:
    """The factor block sizes; ``"estimate"`` reads the materialised pairs (not the cube)."""
    if not (isinstance(dimensions, str) and dimensions == "estimate"):
        return _check_dimensions(dimensions, factors, units, pairs)
    if source == "zarr":
        a, b = da.from_zarr(a), da.from_zarr(b)
    materialised = pairs.copy()
    materialised["a"] = (("pair", "unit"), a)
    materialised["b"] = (("pair", "unit"), b)
    return _check_dimensions(dimensions, factors, units, materialised)


# -- fit: the data -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Split:
    """Training and held-out rows, the batch and the rows read per block."""

    train: _Arrays
    held: _Arrays
    batch: int
    block: int

    @property
    def train_rows(self) -> int:
        return len(self.train)

    @property
    def held_rows(self) -> int:
        return len(self.held)


def _split(a: Any, b: Any, rho: np.ndarray, opts: _Options, source: str, dtype: Any) -> _Split:
    """The last ``validation`` fraction of the (randomly ordered) pairs is held out."""
    n = len(rho)
    n_val = round(opts.validation * n)
    if opts.validation > 0 and n_val == 0:
        n_val = 1
    n_train = n - n_val
    if n_train < 1:
        raise ValueError(f"validation={opts.validation} leaves no training pairs out of {n}")
    batch = min(opts.batch_size, n_train)
    block = n_train if source == "memory" else max(batch, a.chunks[0])
    return _Split(
        train=_Arrays(a, b, rho, 0, n_train, dtype),
        held=_Arrays(a, b, rho, n_train, n, dtype),
        batch=batch,
        block=block,
    )


@dataclass(frozen=True)
class _Noise:
    """The dequantisation noise: its σ (standardised units when the flow standardises), the
    scale applied to raw units, and the flow's Standardize layer (or None)."""

    std: float
    scale: Any
    standardize: Any


def _prepare_flow(flow: Any, train: _Arrays, batch: int, jitter: float, dtype: Any) -> _Noise:
    """Set the flow's Standardize statistics (or check the units' scale), choose the noise and
    build the flow on the first training rows (ActNorm initialises on real data)."""
    first = train.rows(0, min(len(train), max(batch, 2)))
    unit_mean, unit_std = _unit_statistics(train)
    _check_finite(unit_mean, unit_std)
    standardize = _standardize_layer(flow)
    if standardize is None:
        _check_scale(unit_mean, unit_std)
        noise_std = float(jitter * np.sqrt(np.mean(unit_std**2))) if jitter else 0.0
        if jitter and noise_std == 0.0:
            noise_std = float(jitter)  # every unit constant: absolute jitter
        noise_scale: Any = noise_std
    else:
        if float(keras.ops.convert_to_numpy(standardize.initialized)) < 0.5:
            standardize.set_statistics(unit_mean, unit_std)
        noise_std = float(jitter)  # in standardised units
        log_scale = keras.ops.convert_to_numpy(standardize.log_scale).astype(np.float64)
        noise_scale = (jitter * np.exp(log_scale)).astype(dtype)  # in the raw units
    flow(tf.constant(first[0]))  # builds the flow; ActNorm initialises on real data
    return _Noise(std=noise_std, scale=noise_scale, standardize=standardize)


def _stream(
    split: _Split, rng: np.random.Generator, source: str, spec: tuple[Any, ...]
) -> Iterator[tuple[Any, Any, Any]]:
    """One epoch's training batches: from memory, or from Zarr through a ``tf.data`` pipeline
    with a reading thread."""
    if source == "memory":
        yield from _batches(split.train, split.batch, rng, split.block)
        return
    data = tf.data.Dataset.from_generator(
        lambda: _batches(split.train, split.batch, rng, split.block), output_signature=spec
    ).prefetch(2)
    yield from data


# -- fit: the compiled step and evaluation ---------------------------------------------------
class _Compiled:
    """The training step (fixed batches) and the held-out evaluation (fixed blocks of up to
    1024 rows, the last one padded), each compiled once."""

    def __init__(
        self,
        flow: Any,
        split: _Split,
        dims: list[int],
        n_factors: int,
        opts: _Options,
        noise: _Noise,
        dtype: Any,
    ) -> None:
        self.flow, self.dims, self.noise, self.opts = flow, dims, noise, opts
        self.batch = split.batch
        units = int(split.train.a.shape[1])
        tf_dtype = tf.as_dtype(dtype)
        self.optimizer = keras.optimizers.Adam(learning_rate=opts.learning_rate)
        self.variables = flow.trainable_variables
        self.optimizer.build(self.variables)
        # held-out rows go through in blocks of a fixed size (the last one padded), so the
        # evaluation is traced once, whatever the number of held-out pairs
        held = len(split.held)
        self.eval_rows = min(_EVAL_ROWS, held if held else len(split.train))
        self.spec = (
            tf.TensorSpec((self.batch, units), tf_dtype),
            tf.TensorSpec((self.batch, units), tf_dtype),
            tf.TensorSpec((self.batch, n_factors), tf.float64),
        )
        self.train = tf.function(
            self.train_step,
            input_signature=[*self.spec, tf.TensorSpec((2,), tf.int64)],
            jit_compile=opts.jit,
            autograph=False,
        )
        rows = self.eval_rows
        self.eval = tf.function(
            self.evaluate,
            input_signature=[
                tf.TensorSpec((rows, units), tf_dtype),
                tf.TensorSpec((rows, units), tf_dtype),
                tf.TensorSpec((rows, n_factors), tf.float64),
                tf.TensorSpec((2,), tf.int64),
            ],
            autograph=False,
        )

    def jittered(self, a: Any, b: Any, step_seed: Any) -> tuple[Any, Any]:
        """a and b with fresh seeded Gaussian noise (none when σ = 0)."""
        if self.noise.std == 0.0:
            return a, b
        seed_a = tf.stack([step_seed[0], 2 * step_seed[1]])
        seed_b = tf.stack([step_seed[0], 2 * step_seed[1] + 1])
        scale = tf.constant(self.noise.scale, a.dtype)
        return (
            a + scale * tf.random.stateless_normal(tf.shape(a), seed_a, dtype=a.dtype),
            b + scale * tf.random.stateless_normal(tf.shape(b), seed_b, dtype=b.dtype),
        )

    def train_step(self, a: Any, b: Any, r: Any, step_seed: Any) -> Any:
        batch = self.batch
        a, b = self.jittered(a, b, step_seed)
        with tf.GradientTape() as tape:
            # one call on a and b stacked: the flow is traced (and differentiated) once
            z, ld = self.flow(tf.concat([a, b], axis=0))
            za, zb = z[:batch], z[batch:]
            lda, ldb = ld[:batch], ld[batch:]
            loss = factor_loss(za, zb, lda, ldb, r, self.dims, semantics=self.opts.semantics)
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply(grads, self.variables)
        return loss

    def evaluate(self, a: Any, b: Any, r: Any, step_seed: Any) -> tuple[Any, Any]:
        rows = self.eval_rows
        a_j, b_j = self.jittered(a, b, step_seed)
        # one call on the clean responses (their round trip) and the jittered pairs
        z, ld = self.flow(tf.concat([a, a_j, b_j], axis=0))
        back, _ = self.flow.inverse(z[:rows])
        za, zb = z[rows : 2 * rows], z[2 * rows :]
        lda, ldb = ld[rows : 2 * rows], ld[2 * rows :]
        loss = factor_loss(
            za, zb, lda, ldb, r, self.dims, semantics=self.opts.semantics, reduction="none"
        )
        return loss, tf.reduce_max(tf.abs(back - a), axis=1)

    def held_out(self, arrays: _Arrays, limit: int | None) -> tuple[float, float]:
        """Mean pair loss and max round-trip error over (up to ``limit``) rows of ``arrays``."""
        rows = self.eval_rows
        total, worst, count = 0.0, 0.0, 0
        stop = len(arrays) if limit is None else min(limit, len(arrays))
        for s in range(0, stop, rows):
            a, b, r = arrays.rows(s, min(stop, s + rows))
            m = a.shape[0]
            loss, err = self.eval(
                pad_rows(a, rows),
                pad_rows(b, rows),
                pad_rows(r, rows),
                np.array([self.opts.seed + 1, -1 - s], np.int64),
            )
            total += float(np.sum(np.asarray(loss, np.float64)[:m]))
            # NaN propagates (max(0.0, nan) would be 0.0)
            worst = float(np.max([worst, float(np.max(np.asarray(err)[:m]))]))
            count += m
        return total / max(count, 1), worst


# -- fit: the loop -----------------------------------------------------------------------------
@dataclass
class _Run:
    """What the epochs recorded."""

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    invert: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped: bool = False


def _epoch(
    steps: _Compiled, split: _Split, opts: _Options, source: str, epoch: int, run: _Run, step: int
) -> tuple[list[float], int]:
    """One pass over the training pairs: the batch losses, and the step count after it."""
    losses = []
    rng = np.random.default_rng([opts.seed, epoch])
    for i, (a, b, r) in enumerate(_stream(split, rng, source, steps.spec)):
        step += 1
        value = float(steps.train(a, b, r, np.array([opts.seed, step], np.int64)))
        if not math.isfinite(value):
            detail = f" (batch {i + 1})"
            if run.loss:
                detail += f"; the previous epoch's loss was {run.loss[-1]:.6g}"
            raise _not_finite("the training loss", value, epoch, detail)
        losses.append(value)
    return losses, step


def _train(flow: Any, steps: _Compiled, split: _Split, opts: _Options, source: str) -> _Run:
    """The epochs, with held-out evaluation and early stopping (best weights restored)."""
    bar = Steps(opts.epochs, opts.progress, "epoch", values=("loss", "val_loss"))
    run = _Run()
    best, best_weights, waited, step = math.inf, None, 0, 0
    for epoch in range(1, opts.epochs + 1):
        start = time.perf_counter()
        losses, step = _epoch(steps, split, opts, source, epoch, run, step)
        if len(split.held):
            val_loss, invert = steps.held_out(split.held, None)
            if not math.isfinite(val_loss):
                raise _not_finite("the validation loss", val_loss, epoch)
        else:
            val_loss, invert = math.nan, steps.held_out(split.train, 1024)[1]
        if not math.isfinite(invert):
            raise _not_finite("the inversion error max |T⁻¹(T(a)) − a|", invert, epoch)
        loss = float(np.mean(losses))
        run.loss.append(loss)
        run.val_loss.append(val_loss)
        run.invert.append(invert)
        run.seconds.append(time.perf_counter() - start)
        bar.advance(loss=loss, val_loss=val_loss)
        log.debug(
            "fit: epoch %d/%d loss %.6g val_loss %.6g invert_error %.3g (%.2f s)",
            epoch,
            opts.epochs,
            loss,
            val_loss,
            invert,
            run.seconds[-1],
        )
        monitored = val_loss if len(split.held) else loss
        if monitored < best:
            best, run.best_epoch, waited = monitored, epoch, 0
            if opts.patience is not None:
                best_weights = flow.get_weights()
        elif opts.patience is not None:
            waited += 1
            if waited >= opts.patience:
                run.stopped = True
                log.info(
                    "fit: stopped early after epoch %d (no improvement for %d epochs); "
                    "restoring epoch %d",
                    epoch,
                    opts.patience,
                    run.best_epoch,
                )
                break
    if opts.patience is not None and best_weights is not None:
        flow.set_weights(best_weights)
    return run


# -- fit: the result ---------------------------------------------------------------------------
def _history(
    run: _Run,
    opts: _Options,
    split: _Split,
    factors: list[str],
    dims: list[int],
    source: str,
    noise: _Noise,
    dtype: Any,
) -> xr.Dataset:
    """The history Dataset over ``epoch`` with the options and the run's facts as attrs."""
    out = xr.Dataset(
        {
            "loss": ("epoch", np.asarray(run.loss)),
            "val_loss": ("epoch", np.asarray(run.val_loss)),
            "invert_error": ("epoch", np.asarray(run.invert)),
            "seconds": ("epoch", np.asarray(run.seconds)),
        },
        coords={"epoch": np.arange(1, len(run.loss) + 1)},
        attrs=provenance(
            "function",
            "flows.fit",
            semantics=opts.semantics,
            batch_size=split.batch,
            learning_rate=opts.learning_rate,
            validation=opts.validation,
            seed=opts.seed,
            n_train=len(split.train),
            n_val=len(split.held),
            factors=list(factors),
            dimensions=list(dims),
            best_epoch=run.best_epoch,
            stopped_early=run.stopped,
            source=source,
            jitter=opts.jitter,
            noise_std=noise.std,
            standardized=noise.standardize is not None,
            dtype=str(np.dtype(dtype)),
            jit=opts.jit,
            reference="Esser, Rombach & Ommer (2020), arXiv:2004.13166",
        ),
    )
    out["loss"].attrs["description"] = "mean of the epoch's batch losses (mean pair loss)"
    out["val_loss"].attrs["description"] = "mean pair loss of the held-out pairs"
    out["invert_error"].attrs["description"] = "max |T^-1(T(a)) - a| on held-out pairs"
    log.info(
        "fit: %d epoch(s), best epoch %d, final loss %.6g",
        len(run.loss),
        run.best_epoch,
        run.loss[-1] if run.loss else math.nan,
    )
    return out
