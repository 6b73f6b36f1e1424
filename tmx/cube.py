"""The lazy activation cube: ``tmx.activations``.

``activations(model, x, transforms)`` returns an ``xr.DataArray`` named ``activation`` with dims
``(sample, transformation, unit)``, backed by a dask graph. Nothing runs when it is built. Each
(sample block × transformation block) is one task that transforms the block's inputs and runs
the exposed model on them — in inference mode, through a compiled ``tf.function`` with a fixed
batch shape — and returns every recorded unit; the cube's unit chunks are slices of that task's
result, so however many unit chunks there are, each block's forward pass runs once.

The model enters the graph once, as its own key holding a ``ForwardRunner``: on a
``dask.distributed`` cluster it travels to each worker once (serialised as a ``.keras`` file),
not once per task, and each worker compiles it once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import dask.array as da
import keras
import numpy as np
import tensorflow as tf
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from dask.utils import format_bytes

from . import _batching, _progress
from . import _validate as v
from . import inspect as _inspect
from ._memo import memo, per_object
from ._schema import UNIT_COORDS, unit_coords
from ._version import __version__
from .transforms import TransformationSet, apply, apply_many, check_input, identity

log = logging.getLogger("tmx")

# -- unit coordinates ---------------------------------------------------------------------------


# -- the forward runner -------------------------------------------------------------------------
class ForwardRunner:
    """Runs transformation blocks through an exposed model; one instance per graph.

    Holds the exposed Keras model (or, after unpickling on a worker, its ``.keras`` bytes, loaded
    on first use) and compiles one ``tf.function`` per transformation block, with a fixed batch
    of ``samples_per_batch`` samples × the block's transformations; a block's last, short batch
    is padded to the power of two ≥ its samples at most (``tmx._batching.call_rows``: a few
    compiled shapes) and the padding dropped. Thread-safe: the threaded scheduler shares one
    instance. With ``progress``, a bar counts the blocks done out of ``total_blocks``.

    With ``check_finite`` (the default), each input block is checked for NaN and ±inf before
    it runs, and a ``ValueError`` names the samples (a compiled pass would turn them into
    ordinary numbers).

    ``batches``, ``images`` and ``blocks`` count the forward batches run, the images (padding
    included) and the blocks that went through this instance; ``ForwardRunner.loads`` counts
    models loaded from bytes in this process (diagnostics: on a cluster, at most one per worker
    and graph).

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> cube = tmx.activations(model, x, chunks={"sample": 2})           # two sample blocks
    >>> runner = tmx.cube.forward_runner(cube)
    >>> runner.blocks, runner.batches                          # nothing run yet
    (0, 0)
    >>> _ = cube.compute()                                     # one forward batch per block
    >>> runner.blocks, runner.batches, runner.images
    (2, 2, 4)
    """

    loads = 0
    unpickles = 0
    # Per-process cache of (model, compiled functions) by runner token, so that a worker that
    # receives the same runner again (a later compute of the same cube, or of a measure over
    # it) neither reloads nor retraces. Bounded: the least recently used entries are dropped.
    _cache: ClassVar[OrderedDict[str, tuple[Any, dict]]] = OrderedDict()
    _cache_size: ClassVar[int] = 4

    def __init__(
        self,
        model: Any,
        transforms: TransformationSet,
        batch_size: int,
        *,
        dtype: Any = "float32",
        safe_mode: bool = True,
        progress: bool = False,
        total_blocks: int = 0,
        check_finite: bool = True,
    ) -> None:
        self._model = model
        self._bytes: bytes | None = None
        self.transforms = transforms
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)  # what the forward pass takes: float32, or token ids' ints
        self.safe_mode = safe_mode
        self._functions: dict[tuple[tuple[int, ...], int], Any] = {}
        self._lock = threading.Lock()
        self.batches = 0
        self.images = 0
        self.blocks = 0
        self.progress = progress
        self.total_blocks = total_blocks
        self.check_finite = check_finite
        self._bar: Any = None

    # pickling: the model travels as .keras bytes, compiled functions are rebuilt on arrival
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bytes"] = self.model_bytes()
        state["_model"] = None
        state["_functions"] = {}
        state["_lock"] = None
        state["batches"] = state["images"] = state["blocks"] = 0
        state["progress"] = False  # workers have no terminal to report to
        state["_bar"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        cls = type(self)
        cls.unpickles += 1
        token = self.token()  # hashes the model bytes: once
        cached = cls._cache.get(token)
        if cached is not None:
            cls._cache.move_to_end(token)
            self._model, self._functions = cached

    def token(self) -> str:
        """Identifies the model bytes and everything compiled from them."""
        digest = hashlib.sha256(self.model_bytes())
        extra = f"{self.transforms.to_json()}|{self.batch_size}|{self.dtype.name}|{self.safe_mode}"
        digest.update(extra.encode())
        return digest.hexdigest()

    def model_bytes(self) -> bytes:
        if self._bytes is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                self._model.save(path)
                with open(path, "rb") as fh:
                    self._bytes = fh.read()
        return self._bytes

    @property
    def model(self) -> Any:
        with self._lock:
            return self._load()

    def _load(self) -> Any:
        if self._model is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                with open(path, "wb") as fh:
                    fh.write(self.model_bytes())  # the bytes it arrived with
                self._model = keras.models.load_model(path, compile=False, safe_mode=self.safe_mode)
            cls = type(self)
            cls.loads += 1
            cls._cache[self.token()] = (self._model, self._functions)
            while len(cls._cache) > cls._cache_size:
                cls._cache.popitem(last=False)
        return self._model

    def samples_per_batch(self, block: int) -> int:
        return max(1, self.batch_size // block)

    def _function(self, indices: tuple[int, ...], sample_shape: tuple[int, ...], rows: int):
        with self._lock:
            fn = self._functions.get((indices, rows))
            if fn is None:
                # a live model (not unpickled): reuse what an earlier cube of the same model,
                # transformations and batch compiled, instead of tracing again per cube
                key = (
                    self.transforms.to_json(),
                    self.dtype.name,
                    indices,
                    rows,
                    tuple(sample_shape),
                )
                if self._model is None:
                    fn = self._compile(indices, sample_shape, rows)
                else:
                    fn = memo(
                        _live_functions,
                        self._model,
                        key,
                        lambda: self._compile(indices, sample_shape, rows),
                    )
                self._functions[(indices, rows)] = fn
            return fn

    def _compile(self, indices: tuple[int, ...], sample_shape: tuple[int, ...], rows: int):

        model = self._load()  # the caller holds the lock
        tset = self.transforms
        k = len(indices)
        spec = tf.TensorSpec((rows, *sample_shape), tf.as_dtype(self.dtype))

        @tf.function(input_signature=[spec, tf.TensorSpec((rows,), tf.int64)])
        def forward(xb, sample_index):
            stacked = apply_many(tset, xb, indices, sample_index=sample_index)
            batch = tf.reshape(stacked, (rows * k, *sample_shape))
            outputs = model(batch, training=False)
            if not isinstance(outputs, list | tuple):
                outputs = [outputs]
            return [tf.cast(o, tf.float32) for o in outputs]

        return forward

    def __call__(
        self, x_block: np.ndarray, sample_index: np.ndarray, indices: tuple[int, ...]
    ) -> np.ndarray | None:
        """Activations of one block: (samples, len(indices), units), float32 (None for a block
        of no samples: nothing runs).

        Full batches of ``samples_per_batch`` samples, then the rest in one batch padded to
        the power of two ≥ the rest (``tmx._batching.call_rows``): a block of 3 samples runs
        4 samples' images, not a whole batch's."""
        x_block = np.asarray(x_block, dtype=self.dtype)
        n, k = x_block.shape[0], len(indices)
        if self.check_finite and x_block.dtype.kind in "fc":
            _check_finite_block(x_block, sample_index)
        spb = self.samples_per_batch(k)
        out: np.ndarray | None = None
        for start, stop, rows in _batching.batches(n, spb):
            fn = self._function(indices, x_block.shape[1:], rows)
            xb = x_block[start:stop]
            ib = np.asarray(sample_index[start:stop], dtype=np.int64)
            real = stop - start
            # fixed batch shape: pad the last batch, drop the padding's results
            xb, ib = _batching.pad_rows(xb, rows), _batching.pad_rows(ib, rows)
            results = [r.numpy().reshape(rows, k, -1) for r in fn(xb, ib)]
            if out is None:  # one copy: each layer's output straight into the block
                widths = [r.shape[2] for r in results]
                offsets = np.concatenate([[0], np.cumsum(widths)])
                out = np.empty((n, k, int(offsets[-1])), np.float32)
            for r, lo, hi in zip(results, offsets[:-1], offsets[1:], strict=True):
                out[start:stop, :, lo:hi] = r[:real]
            del results
            with self._lock:
                self.batches += 1
                self.images += rows * k
        log.debug(
            "activations: forward block of %d sample(s) x %d transformation(s) from sample %s",
            n,
            k,
            sample_index[0] if n else "-",
        )
        with self._lock:
            self.blocks += 1
            bar = self._bar
            if bar is None and self.progress and self.total_blocks:
                bar = self._bar = _progress.Steps(self.total_blocks, True, "block")
            if bar is not None:
                bar.advance()
                if bar.done >= self.total_blocks:
                    self._bar = None  # the next compute starts a new bar
        return out


# the exposed models of live models, per model object and endpoints (weakly), so that cubes of
# the same model and layers share one exposed model and hence its compiled functions
_exposed_models = per_object()
# compiled forward functions of live models, per model object (weakly: they go with the model)
_live_functions = per_object()


def _exposed(model: Any, descriptors: list[Any], names: list[str]) -> Any:
    return memo(_exposed_models, model, tuple(names), lambda: _inspect.expose(model, descriptors))


def _static_shape(name: str, shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """An endpoint's shape (without the batch axis), each size known from the model's graph."""
    sizes = tuple(d for d in shape if d is not None)
    if len(sizes) != len(shape):
        raise ValueError(
            f"layers: endpoint {name!r} has a shape {shape} with sizes the model's graph leaves "
            "open (None); a cube needs each layer's unit shape, so build the model with a fixed "
            "input shape"
        )
    return tuple(int(d) for d in sizes)


def _run_block(runner: ForwardRunner, x_block, sample_index, indices):
    return runner(x_block, sample_index, indices)


def _slice_units(block: np.ndarray, start: int, stop: int) -> np.ndarray:
    return block[:, :, start:stop]


def _sample_list(indices: Sequence[int], limit: int = 10) -> str:
    """``3, 17, 40`` or ``3, 17, ... (25 in all)``."""
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown if len(indices) <= limit else f"{shown}, ... ({len(indices)} in all)"


def _check_finite_block(x_block: np.ndarray, sample_index: np.ndarray) -> None:
    """Raise when samples of an input block hold NaN or ±inf.

    A compiled forward pass does not propagate NaN reliably (XLA's fused Conv2D + ReLU maps
    NaN to 0, where an eager pass gives NaN), so a non-finite input would turn into ordinary
    looking activations."""
    n = x_block.shape[0]
    finite = np.isfinite(x_block.reshape(n, -1)).all(axis=1)
    if finite.all():
        return
    bad = np.asarray(sample_index)[~finite]
    raise ValueError(
        f"x: the samples at indices {_sample_list(list(bad))} hold NaN or infinite values "
        f"(after conversion to {x_block.dtype}); a compiled forward pass does not carry them "
        "through (a fused Conv2D + ReLU maps NaN to 0), so they would come out as ordinary "
        "numbers. Clean or drop those samples, or pass check_finite=False to tmx.activations "
        "to compute them anyway"
    )


# -- identity of the inputs, for tmx.save ------------------------------------------------------
class InputDigests:
    """The keys, in a cube's graph, of the sha256 of each input block (one per sample block).

    ``tmx.activations`` adds one task per sample block that hashes the block of ``x`` the
    forward pass of that block reads; nothing depends on them, so computing the cube never
    runs them. ``tmx.save`` makes the write of every chunk depend on the digest of its sample
    block, so a lazy ``x`` is read once for the forward pass and the digest together, and the
    digest is recorded with the chunk (see ``input_digest_keys``).

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> cube = tmx.activations(model, x, chunks={"sample": 2})           # two sample blocks
    >>> keys = tmx.cube.input_digest_keys(cube.data)       # from the cube's InputDigests
    >>> len(keys), [index for _, index in keys]
    (2, [0, 1])
    """

    __slots__ = ("__weakref__", "keys", "sample_chunks")

    def __init__(self, keys: tuple[Any, ...], sample_chunks: tuple[int, ...]) -> None:
        self.keys = keys
        self.sample_chunks = sample_chunks

    def __reduce__(self) -> tuple[Any, ...]:
        return (InputDigests, (self.keys, self.sample_chunks))


# activation array name -> its InputDigests; the entry lives as long as the cube's graph (the
# graph's digest tasks hold the object)
_input_digests: weakref.WeakValueDictionary[str, InputDigests] = weakref.WeakValueDictionary()


def input_digest_keys(data: Any) -> tuple[Any, ...] | None:
    """Per sample block, the key in ``data``'s graph of the sha256 of that block's input.

    ``data`` is the dask array of a cube built by ``tmx.activations`` (or any array with the
    same name, hence the same graph: copies, attrs or coordinates changed). None for any other
    array, including a cube rechunked or indexed since. Used by ``tmx.save``, which records
    each digest with the chunks computed from that input block.

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> cube = tmx.activations(model, x, chunks={"sample": 2})           # two sample blocks
    >>> keys = tmx.cube.input_digest_keys(cube.data)
    >>> len(keys)                                              # one per sample block
    2
    >>> digests = cube.data.__dask_graph__()
    >>> digests[keys[1]]  # doctest: +ELLIPSIS
    (<function _input_digest at 0x...>, <tmx.cube.InputDigests object at 0x...>, ..., 2)
    >>> tmx.cube.input_digest_keys(cube.data[:3]) is None     # indexed since: a new graph
    True
    """
    name = getattr(data, "name", None)
    entry = _input_digests.get(name) if isinstance(name, str) else None
    if entry is None or tuple(data.chunks[0]) != entry.sample_chunks:
        return None
    return entry.keys


def digest_input_block(block: Any, start: int) -> bytes:
    """sha256 of one block of ``x`` starting at sample ``start`` (dtype, shape, position, bytes).

    Examples
    --------
    >>> import numpy as np
    >>> from tmx.cube import digest_input_block
    >>> block = np.ones((2, 3), "float32")
    >>> len(digest_input_block(block, 0))                     # 32 bytes
    32
    >>> digest_input_block(block, 0) == digest_input_block(block, 2)   # the position counts
    False
    """
    block = np.ascontiguousarray(np.asarray(block))
    digest = hashlib.sha256(f"tmx-input|{block.dtype.str}|{block.shape}|{start}|".encode())
    digest.update(memoryview(block).cast("B") if block.size else b"")
    return digest.digest()


def _input_digest(_owner: InputDigests, block: Any, start: int) -> bytes:
    return digest_input_block(block, start)


def _array_sha256(values: np.ndarray) -> str:
    """sha256 of a whole in-memory ``x``: dtype, shape and bytes."""
    values = np.ascontiguousarray(values)
    digest = hashlib.sha256(f"tmx-x|{values.dtype.str}|{values.shape}|".encode())
    digest.update(values.data.cast("B") if values.size else b"")
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    # anything else by type and repr, without the memory addresses that change per process
    text = f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):  # non-str keys of mixed types, cycles
        return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _config_sha256(model: Any) -> str:
    """sha256 of the model's architecture: its class, its ``get_config()`` and the class and
    config of each of its layers, as canonical JSON (sorted keys).

    Two models with the same weights but another layer, activation or connectivity get
    different digests. A subclassed model whose ``call`` is not described by any config is
    identified by its class and its layers' configs only."""

    def config(obj: Any) -> Any:
        try:
            return obj.get_config()
        except Exception:  # NotImplementedError for some subclassed models and layers
            return None

    description = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": config(model),
        "layers": [
            [f"{type(layer).__module__}.{type(layer).__qualname__}", config(layer)]
            for layer in getattr(model, "layers", [])
        ],
    }
    return hashlib.sha256(_canonical(description).encode()).hexdigest()


# -- inputs -------------------------------------------------------------------------------------
def _as_dask_input(
    x: Any,
) -> tuple[da.Array, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(dask array, sample coordinate or None, label coordinate or None, the values when ``x``
    is in memory or None when it is lazy)."""
    sample = label = None
    if isinstance(x, xr.DataArray):
        if "sample" not in x.dims:
            raise ValueError(f"x: a DataArray input needs a 'sample' dim; got dims {x.dims}")
        x = x.transpose("sample", ...)
        if "sample" in x.coords:
            sample = np.asarray(x["sample"].values)
        if "label" in x.coords and x["label"].dims == ("sample",):
            label = np.asarray(x["label"].values)
        data = x.data
    else:
        data = x
    values = None
    if isinstance(data, da.Array):
        arr = data
    elif type(data).__module__.startswith("zarr"):
        arr = da.from_zarr(data)
    elif isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        values = np.asarray(data)
        arr = da.from_array(values, chunks=-1)
    else:
        raise ValueError(
            "x must be a numpy array, an xr.DataArray with a 'sample' dim, a dask array or a "
            f"zarr array; got {type(x).__name__}"
        )
    if arr.ndim < 2:
        raise ValueError(
            f"x must have a sample axis and at least one feature axis; got {arr.shape}"
        )
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"x must be numeric; got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(
            f"x has no samples (shape {tuple(arr.shape)}); a cube needs at least one sample"
        )
    return arr, sample, label, values


def _weights_sha256(model: Any) -> str:
    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return digest.hexdigest()


def _check_chunks(chunks: dict[str, int] | None) -> dict[str, int]:
    chunks = dict(chunks or {})
    unknown = set(chunks) - {"sample", "transformation", "unit"}
    if unknown:
        raise ValueError(
            f"chunks: unknown dims {sorted(unknown)}; expected keys 'sample', 'transformation', "
            "'unit'"
        )
    return {k: v.positive_int(val, f"chunks[{k!r}]") for k, val in chunks.items()}


_transient_bytes_cache = per_object()


def _transient_bytes(model: Any) -> int:
    """Bytes per image of the model's largest top-level layer output (float32): what a forward
    pass holds in flight besides the recorded outputs."""

    def compute() -> int:
        try:
            shapes = [e.shape for e in _inspect.resolve(model, _inspect.default_endpoints(model))]
        except ValueError:
            return 0
        sizes = [int(np.prod([d or 1 for d in shape])) for shape in shapes]
        return 4 * max(sizes, default=0)

    return memo(_transient_bytes_cache, model, "largest", compute)


def _model_input_shape(model: Any) -> tuple[Any, ...] | None:
    """The model's per-sample input shape (None for free axes), or None when unknown or when
    the model has several inputs."""
    try:
        inputs = getattr(model, "inputs", None)
        if inputs and len(inputs) == 1:
            return tuple(inputs[0].shape[1:])
        shapes = getattr(model, "_build_shapes_dict", None)
        if not inputs and shapes and len(shapes) == 1:
            return tuple(next(iter(shapes.values())))[1:]
    except (AttributeError, TypeError, ValueError):  # models never called: nothing to check
        return None
    return None


def _check_transforms(
    transforms: TransformationSet, shape: tuple[int, ...], dtype: np.dtype
) -> None:
    """Apply each transformation to one blank sample of ``x``'s shape: a transformation that
    cannot take it (``rot90`` of a non-square image) or changes its shape fails here, when the
    cube is built, not inside a forward pass."""

    blank = tf.zeros((1, *shape), tf.as_dtype(dtype))
    index = tf.zeros((1,), tf.int64)
    for j in range(len(transforms)):
        label = transforms.labels[j]
        try:
            out = apply(transforms, blank, j, sample_index=index)
        except Exception as exc:  # reported with the transformation named
            raise ValueError(
                f"transforms: transformation {j} ({label!r}) cannot be applied to x, whose "
                f"samples have shape {tuple(shape)}: {exc}"
            ) from exc
        if tuple(out.shape[1:]) != tuple(shape):
            raise ValueError(
                f"transforms: transformation {j} ({label!r}) turns samples of x of shape "
                f"{tuple(shape)} into {tuple(out.shape[1:])}; every transformation must keep "
                "the shape"
            )


# -- the public function ------------------------------------------------------------------------
def activations(
    model: Any,
    x: Any,
    transforms: TransformationSet | None = None,
    *,
    layers: Any = None,
    batch_size: int | None = None,
    chunks: dict[str, int] | None = None,
    memory: int | str | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    progress: bool | None = None,
    safe_mode: bool = True,
    check_finite: bool = True,
) -> xr.DataArray:
    """The lazy activation cube a[i, j, u] of a model over samples × transformations.

    Parameters
    ----------
    model : keras.Model or path
        A Keras 3 model, or a path to a ``.keras``/``.h5`` file (loaded with ``safe_mode``).
    x : numpy array, xr.DataArray, dask array or zarr array
        The untransformed samples, sample axis first (NHWC images when ``transforms`` is given).
        Lazy inputs are read block by block, never whole. A DataArray's ``sample`` and
        ``label`` coordinates are kept. Its per-sample shape is checked against the model's
        input shape when the cube is built.
    transforms : TransformationSet, optional
        The T transformations; ``None`` means the identity only (T = 1). Each is tried on one
        blank sample when the cube is built (e.g. ``rot90`` needs square images).
    layers : endpoint descriptor or list of them, optional
        Which units to record: int index, name, Layer, tuple path into nested models, or
        ``{"name"|"layer": ..., "link": "output"|"input"}``; one descriptor (``"conv1"``) or
        a list. ``None``: every layer output except the input. An unknown descriptor raises
        ``ValueError`` listing valid names.
    batch_size : int, optional
        Images per forward batch (at least one sample × the transformations of a block).
        Default: planned from ``memory`` (at most 256, a power of two).
    chunks : dict, optional
        Chunk sizes ``{"sample": s, "transformation": t, "unit": u}``. Defaults: all
        transformations; samples and units planned from ``memory`` (blocks of at most
        64 MiB when the budget allows, whole forward batches per block).
    memory : int or str, optional
        The memory budget the forward batch and chunks are planned for, in bytes or as a size
        (``"4GB"``). Default: 2 GiB, or a quarter of the machine's memory when that is less.
        It bounds, for the scheduler's threads together, the forward batches, the blocks and
        the float64 work a measure such as ``tmx.normalized_variance`` makes on them; the
        process also holds TensorFlow itself (about 0.7 GB). Given ``batch_size`` and
        ``chunks`` are kept as they are.
    labels : sequence, optional
        Per-sample labels, stored as the ``label`` coordinate on ``sample``.
    progress : bool or None, default None
        Report the forward passes (blocks done out of the total) when the cube is computed.
        None: when run interactively (a terminal, not under pytest or CI).
    safe_mode : bool, default True
        Passed to ``keras.models.load_model`` for paths, and on workers of a distributed run.
    check_finite : bool, default True
        Check each input block for NaN and ±inf as it is run, and raise a ``ValueError``
        naming the sample indices. A compiled forward pass does not carry NaN through (a
        fused Conv2D + ReLU maps it to 0), so without the check a non-finite input comes out
        as ordinary numbers. ``False`` computes such samples anyway.

    Returns
    -------
    xr.DataArray
        ``activation``, float32, dims ``(sample, transformation, unit)``, dask-backed, with the
        transformation set's parameter coordinates, the unit coordinates ``layer``, ``channel``,
        ``y``, ``x`` (−1 where a layer has no such axis), and provenance ``attrs``:
        the tmx, TensorFlow and Keras versions, ``model_name``, ``model_weights_sha256``
        (the weights), ``model_config_sha256`` (the architecture: canonical JSON of the
        model's and its layers' configs), ``input_sha256`` (the whole ``x``, when it is in
        memory; a lazy ``x`` is identified block by block when the cube is saved, see
        ``tmx.save``), the transformations, layers, input shape, batch size and ``created``.

    Raises
    ------
    ValueError
        For unknown layers, bad chunks, batch size or budget, an ``x`` without samples or
        whose samples do not have the model's input shape (the message gives both shapes,
        and the transpose for a channels-first batch), or a transformation that cannot be
        applied to ``x``. When the cube is computed: for samples of ``x`` that hold NaN or
        ±inf (see ``check_finite``).

    Notes
    -----
    Building the cube runs no forward pass. Computing it runs one forward pass per
    (sample block × transformation block), shared by all unit chunks of that block; a
    block's last batch is padded to a power of two at most, not to a whole batch.

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, name="conv1"),
    ...      keras.layers.Flatten(name="flat"), keras.layers.Dense(3, name="d")])
    >>> x = np.random.default_rng(0).random((5, 6, 6, 1)).astype("float32")
    >>> rotations = tmx.transforms.rotation([0, 90, 180, 270])
    >>> cube = tmx.activations(model, x, rotations, layers=["conv1", "d"])
    >>> dict(cube.sizes), cube.dtype
    ({'sample': 5, 'transformation': 4, 'unit': 35}, dtype('float32'))
    >>> conv1 = cube.sel(unit=cube.layer == "conv1")              # 4 × 4 positions × 2 channels
    >>> conv1.mean("sample").compute().shape
    (4, 32)
    >>> cube.transform.values.tolist()
    ['rotation(0)', 'rotation(90)', 'rotation(180)', 'rotation(270)']
    """
    model = _inspect.load_model(model, safe_mode=safe_mode)
    options = _check_options(transforms, batch_size, chunks, memory, progress, check_finite)
    inputs = _check_inputs(model, x, options.transforms, labels)
    units = _check_layers(model, layers)
    plan = _plan(model, inputs, options, units)
    runner = ForwardRunner(
        units.exposed,
        options.transforms,
        plan.batch_size,
        dtype=inputs.dtype,
        safe_mode=safe_mode,
        progress=options.progress,
        total_blocks=plan.n_blocks,
        check_finite=options.check_finite,
    )
    data = _graph(runner, plan, options.transforms, units)
    return _wrap(model, data, inputs, options.transforms, units, plan.batch_size)


# -- activations' steps: check, plan, build the graph, wrap --------------------------------------
@dataclass(frozen=True)
class _Options:
    """``activations``' options, checked."""

    transforms: TransformationSet
    batch_size: int | None
    chunks: dict[str, int]
    memory: int  # bytes
    progress: bool
    check_finite: bool


def _check_options(
    transforms: Any,
    batch_size: Any,
    chunks: Any,
    memory: Any,
    progress: Any,
    check_finite: Any,
) -> _Options:
    """The options, checked in the order ``activations`` names them in its errors."""
    if batch_size is not None:
        batch_size = v.positive_int(batch_size, "batch_size")
    budget = _batching.parse_memory(memory, "memory")
    show = _progress.resolve(progress)
    chunks = _check_chunks(chunks)
    if transforms is None:
        transforms = identity()
    if not isinstance(transforms, TransformationSet):
        raise ValueError(
            f"transforms must be a TransformationSet (tmx.transforms) or None; got "
            f"{type(transforms).__name__}"
        )
    check_finite = v.flag(check_finite, "check_finite")
    return _Options(transforms, batch_size, chunks, budget, show, check_finite)


@dataclass(frozen=True)
class _Inputs:
    """``x`` as a dask array, with what came with it."""

    data: da.Array  # (N, *sample shape), one chunk until planned
    sample: np.ndarray | None  # x's sample coordinate
    labels: np.ndarray | None  # the labels given, or x's label coordinate
    values: np.ndarray | None  # x's values when it is in memory (for input_sha256)
    dtype: np.dtype  # what the forward pass feeds the model

    @property
    def n(self) -> int:
        return int(self.data.shape[0])


def _check_inputs(model: Any, x: Any, transforms: TransformationSet, labels: Any) -> _Inputs:
    """``x`` (and ``labels``) checked against the model's input shape and the
    transformations, each of which is tried on one blank sample."""
    xd, sample_coord, label_coord, x_values = _as_dask_input(x)
    n = int(xd.shape[0])
    expected = _model_input_shape(model)
    if expected is not None:
        v.input_shape(tuple(int(d) for d in xd.shape), expected, "x")
    # geometric transformations of images need NHWC x; the rest take any rank (tables,
    # sequences, token ids); integer x other than images keeps its dtype (token ids)
    dtype = check_input(transforms, xd.shape, xd.dtype)
    dtype = np.dtype(np.float32) if dtype.kind == "f" else dtype
    if transforms != identity():
        _check_transforms(transforms, tuple(int(d) for d in xd.shape[1:]), dtype)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have one entry per sample ({n}); got {labels.shape}")
    else:
        labels = label_coord
    return _Inputs(xd, sample_coord, labels, x_values, dtype)


@dataclass(frozen=True)
class _Units:
    """The recorded layers: their endpoint names, the unit coordinates, the exposed model."""

    descriptors: list[Any]
    names: list[str]
    coords: dict[str, np.ndarray]  # layer, channel, y, x along unit
    exposed: Any

    @property
    def size(self) -> int:
        return len(self.coords["layer"])


def _check_layers(model: Any, layers: Any) -> _Units:
    """The layers to record (every layer output by default), resolved on the model, each
    with a unit shape its graph fixes; the model exposing their outputs."""
    descriptors = (
        _inspect.default_endpoints(model) if layers is None else _inspect.descriptor_list(layers)
    )
    if not descriptors:
        raise ValueError("layers must name at least one layer")
    endpoints = _inspect.resolve(model, descriptors)
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ValueError(f"layers: the same endpoint is listed twice: {names}")
    shapes = [_static_shape(e.name, e.shape) for e in endpoints]
    coords = unit_coords(names, shapes)
    return _Units(descriptors, names, coords, _exposed(model, descriptors, names))


@dataclass(frozen=True)
class _Plan:
    """The forward batch and the cube's chunks; ``x`` rechunked into the sample blocks."""

    batch_size: int
    x: da.Array
    t_chunks: tuple[int, ...]  # transformations per block
    u_chunks: tuple[int, ...]  # units per chunk

    @property
    def n_blocks(self) -> int:
        """The forward passes: sample blocks × transformation blocks."""
        return len(self.x.chunks[0]) * len(self.t_chunks)


def _sizes(total: int, block: int) -> tuple[int, ...]:
    """``total`` in blocks of ``block``, the last one shorter."""
    return tuple(min(block, total - s) for s in range(0, total, block))


def _plan(model: Any, inputs: _Inputs, options: _Options, units: _Units) -> _Plan:
    """The forward batch and the chunks planned from the memory budget (a given
    ``batch_size`` and ``chunks`` kept as they are)."""
    n, t = inputs.n, len(options.transforms)
    planned = _batching.plan_cube(
        n,
        t,
        units.size,
        transient_bytes=_transient_bytes(model),
        memory=options.memory,
        batch_size=options.batch_size,
        chunks=options.chunks,
    )
    xd = inputs.data.rechunk((planned.sample, *inputs.data.shape[1:]))
    t_chunks, u_chunks = _sizes(t, planned.transformation), _sizes(units.size, planned.unit)
    plan = _Plan(planned.batch_size, xd, t_chunks, u_chunks)
    log.info(
        "activations: %d sample(s) x %d transformation(s) x %d unit(s) from %d layer(s); "
        "batch %d images, chunks (sample %d, transformation %d, unit %d), memory budget %s; "
        "%d forward block(s)",
        n,
        t,
        units.size,
        len(units.names),
        plan.batch_size,
        planned.sample,
        planned.transformation,
        planned.unit,
        format_bytes(options.memory),
        plan.n_blocks,
    )
    return plan


def _starts(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(start, stop) of consecutive blocks of these sizes."""
    stops = np.cumsum(sizes).tolist()
    return [(stop - size, stop) for size, stop in zip(sizes, stops, strict=True)]


def _graph(
    runner: ForwardRunner, plan: _Plan, transforms: TransformationSet, units: _Units
) -> da.Array:
    """The cube as a dask array: the runner as one key; per sample block, the digest of its
    input block (run only by ``tmx.save``) and one forward task per transformation block,
    whose result every unit chunk of that block slices (one forward pass per block)."""
    xd = plan.x
    token = hashlib.sha256(
        f"{id(runner)}-{xd.name}-{transforms.to_json()}-{units.names}-{plan.batch_size}".encode()
    ).hexdigest()[:16]
    runner_key = f"tmx-model-{token}"
    name = f"tmx-activation-{token}"
    digest_name = f"tmx-input-digest-{token}"
    s_chunks = tuple(xd.chunks[0])
    digests = InputDigests(tuple((digest_name, i) for i in range(len(s_chunks))), s_chunks)
    layer_dsk: dict[Any, Any] = {runner_key: runner}
    for i, (s_start, s_stop) in enumerate(_starts(s_chunks)):
        in_key = (xd.name, i, *([0] * (xd.ndim - 1)))
        layer_dsk[(digest_name, i)] = (_input_digest, digests, in_key, s_start)
        index = np.arange(s_start, s_stop, dtype=np.int64)
        layer_dsk.update(_block_tasks(token, runner_key, in_key, i, index, plan))
    deps: list[Any] = [xd]  # dask types da.Array short of its DaskCollection protocol
    graph = HighLevelGraph.from_collections(name, layer_dsk, dependencies=deps)
    chunks = (s_chunks, plan.t_chunks, plan.u_chunks)
    data = da.Array(graph, name, chunks=chunks, dtype=np.float32)
    _input_digests[name] = digests
    return data


def _block_tasks(
    token: str, runner_key: str, in_key: tuple, i: int, sample_index: np.ndarray, plan: _Plan
) -> dict[Any, Any]:
    """Sample block ``i``'s tasks: a forward pass per transformation block, and the cube's
    chunks of that block (the forward result itself when units are one chunk, else slices)."""
    forward_name, name = f"tmx-forward-{token}", f"tmx-activation-{token}"
    tasks: dict[Any, Any] = {}
    for jb, (t_start, t_stop) in enumerate(_starts(plan.t_chunks)):
        fkey = (forward_name, i, jb)
        tasks[fkey] = (_run_block, runner_key, in_key, sample_index, tuple(range(t_start, t_stop)))
        for k, (u_start, u_stop) in enumerate(_starts(plan.u_chunks)):
            one = len(plan.u_chunks) == 1
            tasks[(name, i, jb, k)] = fkey if one else (_slice_units, fkey, u_start, u_stop)
    return tasks


def _wrap(
    model: Any,
    data: da.Array,
    inputs: _Inputs,
    transforms: TransformationSet,
    units: _Units,
    batch_size: int,
) -> xr.DataArray:
    """The labeled cube: sample (and label), the transformations' parameters, the unit
    coordinates, and the provenance attrs."""
    n, t = inputs.n, len(transforms)
    sample = inputs.sample if inputs.sample is not None else np.arange(n)
    coords: dict[Hashable, Any] = {
        "sample": ("sample", sample),
        "transformation": ("transformation", np.arange(t)),
        "unit": ("unit", np.arange(units.size)),
    }
    if inputs.labels is not None:
        coords["label"] = ("sample", inputs.labels)
    params = transforms.parameters
    for cname in params.coords:
        if cname != "transformation":
            coords[cname] = xr.Variable("transformation", params[cname].values, params[cname].attrs)
    for cname in UNIT_COORDS:
        coords[cname] = ("unit", units.coords[cname])
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords=coords,
        name="activation",
        attrs=_provenance(model, inputs, transforms, units, batch_size),
    )


def _provenance(
    model: Any,
    inputs: _Inputs,
    transforms: TransformationSet,
    units: _Units,
    batch_size: int,
) -> dict[str, Any]:
    """The cube's attrs: versions, the model's name and fingerprints, the transformations,
    layers, input shape and batch size, when it was built, and the inputs' sha256 when they
    are in memory."""

    attrs = {
        "tmx_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "model_name": str(model.name),
        "model_weights_sha256": _weights_sha256(model),
        "model_config_sha256": _config_sha256(model),
        "transforms": transforms.to_json(),
        "transforms_description": transforms.description,
        "layers": list(units.names),
        "input_shape": [int(s) for s in inputs.data.shape[1:]],
        "batch_size": batch_size,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if inputs.values is not None:
        attrs["input_sha256"] = _array_sha256(inputs.values)
    return attrs


def forward_runner(cube: xr.DataArray) -> ForwardRunner:
    """The ``ForwardRunner`` inside a cube's graph (for diagnostics and tests).

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> cube = tmx.activations(model, x, chunks={"sample": 2})           # two sample blocks
    >>> runner = tmx.cube.forward_runner(cube)
    >>> type(runner).__name__, runner.model is model
    ('ForwardRunner', False)
    >>> tmx.cube.forward_runner(cube.compute().chunk())        # computed: no runner left
    Traceback (most recent call last):
    ...
    ValueError: cube: no tmx forward runner in this graph (was it built by activations?)
    """
    graph = cube.data.__dask_graph__()
    for key, value in graph.items():
        if isinstance(key, str) and key.startswith("tmx-model-"):
            return value
    raise ValueError("cube: no tmx forward runner in this graph (was it built by activations?)")


__all__ = [
    "ForwardRunner",
    "InputDigests",
    "activations",
    "digest_input_block",
    "forward_runner",
    "input_digest_keys",
    "unit_coords",
]
