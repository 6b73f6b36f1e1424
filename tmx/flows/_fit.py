"""Training an interpretation flow on pairs: ``tmx.flows.fit``.

The pairs come from ``tmx.flows.pairs`` (lazy gathers from a cube). They are materialised
once, in one pass over the cube: in memory when they fit in ``memory_limit`` bytes, otherwise
into a temporary Zarr store that every epoch streams in blocks (a ``tf.data`` pipeline with a
reading thread), so a cube larger than memory trains without being loaded whole.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import xarray as xr

from .. import _validate as v
from .._progress import Steps
from .._progress import resolve as resolve_progress
from .._version import __version__
from ._loss import check_pairs, factor_dimensions, factor_loss

__all__ = ["fit"]

_UNIT_COORDS = ("layer", "channel", "y", "x")
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


def _check_fraction(value: Any, name: str) -> float:
    value = v.finite_real(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {value}")
    return value


def _unit_coords(pairs: xr.Dataset) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in (*_UNIT_COORDS, "unit"):
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
    pairs: xr.Dataset, memory_limit: int, dtype: Any = np.float32
) -> tuple[np.ndarray | Any, np.ndarray | Any, str, str | None]:
    """a and b as numpy (in memory) or zarr arrays (spilled, in ``dtype``), computed in one
    pass."""
    dtype = np.dtype(dtype)
    a = pairs["a"].transpose("pair", "unit")
    b = pairs["b"].transpose("pair", "unit")
    if a.chunks is None and b.chunks is None:
        return np.asarray(a.values), np.asarray(b.values), "memory", None
    nbytes = a.size * dtype.itemsize * 2
    if nbytes <= memory_limit:
        import dask

        a_np, b_np = dask.compute(a.data, b.data)
        return np.asarray(a_np), np.asarray(b_np), "memory", None
    import dask.array as da
    import zarr

    tmp = tempfile.mkdtemp(prefix="tmx-flow-pairs-")
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
    da.store([s for s, _ in stores], [z for _, z in stores], lock=False)
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


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``rows`` (the compiled evaluation's fixed size)."""
    if x.shape[0] == rows:
        return x
    return np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), x.dtype)])


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
    from .layers import dead_or_constant

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
    from .layers import Standardize

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
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    jitter: float = 0.01,
    jit: bool = True,
    dtype: Any = None,
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
    memory_limit : int
        Bytes of pairs held in memory; above it a dask-backed ``pairs`` is written once to a
        temporary Zarr store and streamed from there every epoch.
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
    """
    import keras
    import tensorflow as tf

    from ._build import check_dtype
    from ._build import flow as build_flow

    factors, units = _check_pairs(pairs)
    epochs = v.positive_int(epochs, "epochs")
    batch_size = v.positive_int(batch_size, "batch_size")
    learning_rate = v.finite_real(learning_rate, "learning_rate")
    if learning_rate < 0:
        raise ValueError(f"learning_rate must be >= 0; got {learning_rate}")
    validation = _check_fraction(validation, "validation")
    semantics = v.choice(semantics, "semantics", ("gyoza", "iin"))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    progress = resolve_progress(progress)
    if patience is not None:
        patience = v.positive_int(patience, "patience")
    memory_limit = v.positive_int(memory_limit, "memory_limit")
    jitter = v.finite_real(jitter, "jitter")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0; got {jitter}")
    if not isinstance(jit, bool):
        raise ValueError(f"jit must be True or False; got {jit!r}")
    dtype = check_dtype(dtype)
    if flow is None:
        flow = build_flow(units, seed=int(seed), dtype=dtype)
    elif not (callable(getattr(flow, "inverse", None)) and callable(flow)):
        raise ValueError(
            f"flow must be a tmx.flows.Flow (call and inverse); got {type(flow).__name__}"
        )
    elif dtype is not None and keras.dtype_policies.get(dtype).compute_dtype != str(
        flow.compute_dtype
    ):
        raise ValueError(
            f"dtype={dtype!r} differs from the flow's compute dtype {flow.compute_dtype!r}; "
            "build the flow with tmx.flows.flow(..., dtype=...) or leave dtype out"
        )
    work_dtype = np.dtype(str(flow.compute_dtype))
    tf_dtype = tf.as_dtype(work_dtype)
    rho = np.asarray(pairs["rho"].transpose("pair", "factor").values, np.float64)
    if not np.all((rho >= 0) & (rho < 1)):
        raise ValueError("rho must lie in [0, 1) for every pair and factor (pairs.rho)")

    a_all, b_all, source, tmpdir = _materialise(pairs, memory_limit, work_dtype)
    try:
        if isinstance(dimensions, str) and dimensions == "estimate" and source == "zarr":
            import dask.array as da

            on_disk = pairs.copy()
            on_disk["a"] = (("pair", "unit"), da.from_zarr(a_all))
            on_disk["b"] = (("pair", "unit"), da.from_zarr(b_all))
            dims = _check_dimensions(dimensions, factors, units, on_disk)
        elif isinstance(dimensions, str) and dimensions == "estimate":
            in_memory = pairs.copy()
            in_memory["a"] = (("pair", "unit"), a_all)
            in_memory["b"] = (("pair", "unit"), b_all)
            dims = _check_dimensions(dimensions, factors, units, in_memory)
        else:
            dims = _check_dimensions(dimensions, factors, units, pairs)

        flow.factors = list(factors)
        flow.dimensions = list(dims)
        flow.unit_coords = _unit_coords(pairs) or None

        n = len(rho)
        n_val = round(validation * n)
        if validation > 0 and n_val == 0:
            n_val = 1
        n_train = n - n_val
        if n_train < 1:
            raise ValueError(f"validation={validation} leaves no training pairs out of {n}")
        train = _Arrays(a_all, b_all, rho, 0, n_train, work_dtype)
        held = _Arrays(a_all, b_all, rho, n_train, n, work_dtype)
        batch = min(batch_size, n_train)
        block = n_train if source == "memory" else max(batch, a_all.chunks[0])

        first = train.rows(0, min(n_train, max(batch, 2)))
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
            noise_scale = (jitter * np.exp(log_scale)).astype(work_dtype)  # in the raw units
        flow(tf.constant(first[0]))  # builds the flow; ActNorm initialises on real data
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        variables = flow.trainable_variables
        optimizer.build(variables)

        @tf.function(
            input_signature=[
                tf.TensorSpec((batch, units), tf_dtype),
                tf.TensorSpec((batch, units), tf_dtype),
                tf.TensorSpec((batch, len(factors)), tf.float64),
                tf.TensorSpec((2,), tf.int64),
            ],
            jit_compile=jit,
            autograph=False,
        )
        def train_step(a, b, r, step_seed):
            a, b = _jittered(a, b, step_seed)
            with tf.GradientTape() as tape:
                # one call on a and b stacked: the flow is traced (and differentiated) once
                z, ld = flow(tf.concat([a, b], axis=0))
                za, zb = z[:batch], z[batch:]
                lda, ldb = ld[:batch], ld[batch:]
                loss = factor_loss(za, zb, lda, ldb, r, dims, semantics=semantics)
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            return loss

        def _jittered(a, b, step_seed):
            if noise_std == 0.0:
                return a, b
            seed_a = tf.stack([step_seed[0], 2 * step_seed[1]])
            seed_b = tf.stack([step_seed[0], 2 * step_seed[1] + 1])
            scale = tf.constant(noise_scale, a.dtype)
            return (
                a + scale * tf.random.stateless_normal(tf.shape(a), seed_a, dtype=a.dtype),
                b + scale * tf.random.stateless_normal(tf.shape(b), seed_b, dtype=b.dtype),
            )

        # held-out rows go through in blocks of a fixed size (the last one padded), so the
        # evaluation is traced once, whatever the number of held-out pairs
        eval_rows = min(_EVAL_ROWS, n_val if n_val else n_train)

        @tf.function(
            input_signature=[
                tf.TensorSpec((eval_rows, units), tf_dtype),
                tf.TensorSpec((eval_rows, units), tf_dtype),
                tf.TensorSpec((eval_rows, len(factors)), tf.float64),
                tf.TensorSpec((2,), tf.int64),
            ],
            autograph=False,
        )
        def evaluate(a, b, r, step_seed):
            a_j, b_j = _jittered(a, b, step_seed)
            # one call on the clean responses (their round trip) and the jittered pairs
            z, ld = flow(tf.concat([a, a_j, b_j], axis=0))
            back, _ = flow.inverse(z[:eval_rows])
            za, zb = z[eval_rows : 2 * eval_rows], z[2 * eval_rows :]
            lda, ldb = ld[eval_rows : 2 * eval_rows], ld[2 * eval_rows :]
            loss = factor_loss(za, zb, lda, ldb, r, dims, semantics=semantics, reduction="none")
            return loss, tf.reduce_max(tf.abs(back - a), axis=1)

        def held_out(arrays: _Arrays, limit: int | None) -> tuple[float, float]:
            total, worst, count = 0.0, 0.0, 0
            stop = len(arrays) if limit is None else min(limit, len(arrays))
            for s in range(0, stop, eval_rows):
                a, b, r = arrays.rows(s, min(stop, s + eval_rows))
                m = a.shape[0]
                loss, err = evaluate(
                    _pad_rows(a, eval_rows),
                    _pad_rows(b, eval_rows),
                    _pad_rows(r, eval_rows),
                    np.array([int(seed) + 1, -1 - s], np.int64),
                )
                total += float(np.sum(np.asarray(loss, np.float64)[:m]))
                # NaN propagates (max(0.0, nan) would be 0.0)
                worst = float(np.max([worst, float(np.max(np.asarray(err)[:m]))]))
                count += m
            return total / max(count, 1), worst

        def stream(epoch_rng: np.random.Generator) -> Iterator:
            if source == "memory":
                yield from _batches(train, batch, epoch_rng, block)
                return
            spec = (
                tf.TensorSpec((batch, units), tf_dtype),
                tf.TensorSpec((batch, units), tf_dtype),
                tf.TensorSpec((batch, len(factors)), tf.float64),
            )
            data = tf.data.Dataset.from_generator(
                lambda: _batches(train, batch, epoch_rng, block), output_signature=spec
            ).prefetch(2)
            yield from data

        bar = Steps(epochs, progress, "epoch", values=("loss", "val_loss"))
        history: dict[str, list[float]] = {k: [] for k in ("loss", "val_loss", "invert", "sec")}
        best, best_epoch, best_weights, waited, stopped = math.inf, 0, None, 0, False
        step = 0
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            losses = []
            for i, (a, b, r) in enumerate(stream(np.random.default_rng([int(seed), epoch]))):
                step += 1
                value = float(train_step(a, b, r, np.array([int(seed), step], np.int64)))
                if not math.isfinite(value):
                    detail = f" (batch {i + 1})"
                    if history["loss"]:
                        detail += f"; the previous epoch's loss was {history['loss'][-1]:.6g}"
                    raise _not_finite("the training loss", value, epoch, detail)
                losses.append(value)
            if n_val:
                val_loss, invert = held_out(held, None)
                if not math.isfinite(val_loss):
                    raise _not_finite("the validation loss", val_loss, epoch)
            else:
                val_loss, invert = math.nan, held_out(train, 1024)[1]
            if not math.isfinite(invert):
                raise _not_finite("the inversion error max |T⁻¹(T(a)) − a|", invert, epoch)
            loss = float(np.mean(losses))
            history["loss"].append(loss)
            history["val_loss"].append(val_loss)
            history["invert"].append(invert)
            history["sec"].append(time.perf_counter() - start)
            bar.advance(loss=loss, val_loss=val_loss)
            monitored = val_loss if n_val else loss
            if monitored < best:
                best, best_epoch, waited = monitored, epoch, 0
                if patience is not None:
                    best_weights = flow.get_weights()
            elif patience is not None:
                waited += 1
                if waited >= patience:
                    stopped = True
                    break
        if patience is not None and best_weights is not None:
            flow.set_weights(best_weights)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

    ran = len(history["loss"])
    out = xr.Dataset(
        {
            "loss": ("epoch", np.asarray(history["loss"])),
            "val_loss": ("epoch", np.asarray(history["val_loss"])),
            "invert_error": ("epoch", np.asarray(history["invert"])),
            "seconds": ("epoch", np.asarray(history["sec"])),
        },
        coords={"epoch": np.arange(1, ran + 1)},
        attrs={
            "semantics": semantics,
            "batch_size": batch,
            "learning_rate": learning_rate,
            "validation": validation,
            "seed": int(seed),
            "n_train": n_train,
            "n_val": n_val,
            "factors": list(factors),
            "dimensions": list(dims),
            "best_epoch": best_epoch,
            "stopped_early": int(stopped),
            "source": source,
            "jitter": jitter,
            "noise_std": noise_std,
            "standardized": int(standardize is not None),
            "dtype": str(work_dtype),
            "jit": int(jit),
            "reference": "Esser, Rombach & Ommer (2020), arXiv:2004.13166",
            "tmx_version": __version__,
        },
    )
    out["loss"].attrs["description"] = "mean of the epoch's batch losses (mean pair loss)"
    out["val_loss"].attrs["description"] = "mean pair loss of the held-out pairs"
    out["invert_error"].attrs["description"] = "max |T^-1(T(a)) - a| on held-out pairs"
    return flow, out
