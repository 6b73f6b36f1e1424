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
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from . import _validate as v
from ._memo import memo, per_object
from .transforms import TransformationSet, identity
from .transforms._apply import _apply_chain

DEFAULT_CHUNK_BYTES = 64 * 2**20  # target bytes of one (sample block × transformation block)
UNIT_COORDS = ("layer", "channel", "y", "x")


# -- unit coordinates ---------------------------------------------------------------------------
def unit_coords(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The ``layer``, ``channel``, ``y``, ``x`` coordinates of the units of several layers.

    Units of one layer are contiguous, in the layer's (y, x, channel) order (C order of an NHWC
    output). A rank-1 output (C,) has y = x = −1; a rank-2 output (L, C) (a sequence) has
    y = −1 and x = position; a rank-3 output (H, W, C) has all four.
    """
    layer, channel, ys, xs = [], [], [], []
    for name, shape in zip(names, shapes, strict=True):
        shape = tuple(int(s) for s in shape)
        if len(shape) == 1:
            (c,) = shape
            yy, xx, cc = np.full(c, -1), np.full(c, -1), np.arange(c)
        elif len(shape) == 2:
            n, c = shape
            xx, cc = np.repeat(np.arange(n), c), np.tile(np.arange(c), n)
            yy = np.full(n * c, -1)
        elif len(shape) == 3:
            h, w, c = shape
            yy, xx, cc = (
                a.reshape(-1)
                for a in np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
            )
        else:
            raise ValueError(
                f"layers: output of {name!r} has shape {shape} (without batch); only (C,), "
                "(L, C) and (H, W, C) outputs can be recorded"
            )
        layer.append(np.full(len(cc), name, dtype=object))
        channel.append(cc)
        ys.append(yy)
        xs.append(xx)
    return {
        "layer": np.concatenate(layer).astype(str),
        "channel": np.concatenate(channel).astype(np.int64),
        "y": np.concatenate(ys).astype(np.int64),
        "x": np.concatenate(xs).astype(np.int64),
    }


# -- the forward runner -------------------------------------------------------------------------
class ForwardRunner:
    """Runs transformation blocks through an exposed model; one instance per graph.

    Holds the exposed Keras model (or, after unpickling on a worker, its ``.keras`` bytes, loaded
    on first use) and compiles one ``tf.function`` per transformation block, with a fixed batch
    of ``samples_per_batch`` samples × the block's transformations (the last batch is padded and
    the padding dropped). Thread-safe: the threaded scheduler shares one instance.

    ``batches`` and ``images`` count the forward batches run and the images (padding included)
    that went through this instance; ``ForwardRunner.loads`` counts models loaded from bytes in
    this process (diagnostics: on a cluster, at most one per worker and graph).
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
        image: bool,
        safe_mode: bool = True,
    ) -> None:
        self._model = model
        self._bytes: bytes | None = None
        self.transforms = transforms
        self.batch_size = batch_size
        self.image = image
        self.safe_mode = safe_mode
        self._functions: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()
        self.batches = 0
        self.images = 0

    # pickling: the model travels as .keras bytes, compiled functions are rebuilt on arrival
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bytes"] = self.model_bytes()
        state["_model"] = None
        state["_functions"] = {}
        state["_lock"] = None
        state["batches"] = state["images"] = 0
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
        extra = f"{self.transforms.to_json()}|{self.batch_size}|{self.image}|{self.safe_mode}"
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
            import keras

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                with open(path, "wb") as fh:
                    fh.write(self._bytes)
                self._model = keras.models.load_model(path, compile=False, safe_mode=self.safe_mode)
            cls = type(self)
            cls.loads += 1
            cls._cache[self.token()] = (self._model, self._functions)
            while len(cls._cache) > cls._cache_size:
                cls._cache.popitem(last=False)
        return self._model

    def samples_per_batch(self, block: int) -> int:
        return max(1, self.batch_size // block)

    def _function(self, indices: tuple[int, ...], sample_shape: tuple[int, ...]):
        with self._lock:
            fn = self._functions.get(indices)
            if fn is None:
                # a live model (not unpickled): reuse what an earlier cube of the same model,
                # transformations and batch compiled, instead of tracing again per cube
                key = (
                    self.transforms.to_json(),
                    self.batch_size,
                    self.image,
                    indices,
                    tuple(sample_shape),
                )
                if self._model is None:
                    fn = self._compile(indices, sample_shape)
                else:
                    fn = memo(
                        _live_functions,
                        self._model,
                        key,
                        lambda: self._compile(indices, sample_shape),
                    )
                self._functions[indices] = fn
            return fn

    def _compile(self, indices: tuple[int, ...], sample_shape: tuple[int, ...]):
        import tensorflow as tf

        model = self._load()  # the caller holds the lock
        tset = self.transforms
        k = len(indices)
        spb = self.samples_per_batch(k)
        spec = tf.TensorSpec((spb, *sample_shape), tf.float32)

        @tf.function(input_signature=[spec, tf.TensorSpec((spb,), tf.int64)], reduce_retracing=True)
        def forward(xb, sample_index):
            if self.image:
                parts = [_apply_chain(tset.elements[j], xb, j, sample_index) for j in indices]
                batch = tf.reshape(tf.stack(parts, axis=1), (spb * k, *sample_shape))
            else:
                batch = xb
            outputs = model(batch, training=False)
            if not isinstance(outputs, list | tuple):
                outputs = [outputs]
            return [tf.cast(o, tf.float32) for o in outputs]

        return forward

    def __call__(
        self, x_block: np.ndarray, sample_index: np.ndarray, indices: tuple[int, ...]
    ) -> np.ndarray:
        """Activations of one block: (samples, len(indices), units), float32."""
        x_block = np.asarray(x_block, dtype=np.float32)
        n, k = x_block.shape[0], len(indices)
        fn = self._function(indices, x_block.shape[1:])
        spb = self.samples_per_batch(k)
        out: np.ndarray | None = None
        for start in range(0, n, spb):
            xb = x_block[start : start + spb]
            ib = np.asarray(sample_index[start : start + spb], dtype=np.int64)
            real = xb.shape[0]
            if real < spb:  # fixed batch shape: pad the last batch, drop the padding
                xb = np.concatenate([xb, np.zeros((spb - real, *xb.shape[1:]), xb.dtype)])
                ib = np.concatenate([ib, np.zeros(spb - real, np.int64)])
            results = [r.numpy().reshape(spb, k, -1) for r in fn(xb, ib)]
            if out is None:  # one copy: each layer's output straight into the block
                widths = [r.shape[2] for r in results]
                offsets = np.concatenate([[0], np.cumsum(widths)])
                out = np.empty((n, k, int(offsets[-1])), np.float32)
            for r, lo, hi in zip(results, offsets[:-1], offsets[1:], strict=True):
                out[start : start + real, :, lo:hi] = r[:real]
            with self._lock:
                self.batches += 1
                self.images += spb * k
        return out


# the exposed models of live models, per model object and endpoints (weakly), so that cubes of
# the same model and layers share one exposed model and hence its compiled functions
_exposed_models = per_object()
# compiled forward functions of live models, per model object (weakly: they go with the model)
_live_functions = per_object()


def _exposed(model: Any, descriptors: list[Any], names: list[str]) -> Any:
    from . import inspect as _inspect

    return memo(_exposed_models, model, tuple(names), lambda: _inspect.expose(model, descriptors))


def _run_block(runner: ForwardRunner, x_block, sample_index, indices):
    return runner(x_block, sample_index, indices)


def _slice_units(block: np.ndarray, start: int, stop: int) -> np.ndarray:
    return block[:, :, start:stop]


# -- inputs -------------------------------------------------------------------------------------
def _as_dask_input(x: Any) -> tuple[da.Array, np.ndarray | None, np.ndarray | None]:
    """(dask array, sample coordinate or None, label coordinate or None)."""
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
    if isinstance(data, da.Array):
        arr = data
    elif type(data).__module__.startswith("zarr"):
        arr = da.from_zarr(data)
    elif isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        arr = da.from_array(np.asarray(data), chunks=-1)
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
    return arr, sample, label


def _weights_sha256(model: Any) -> str:
    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return digest.hexdigest()


def _default_chunks(
    n: int, t: int, units: int, batch_size: int, chunks: dict[str, int] | None
) -> tuple[int, int, int]:
    chunks = dict(chunks or {})
    unknown = set(chunks) - {"sample", "transformation", "unit"}
    if unknown:
        raise ValueError(
            f"chunks: unknown dims {sorted(unknown)}; expected keys 'sample', 'transformation', "
            "'unit'"
        )
    t_block = min(t, v.positive_int(chunks.get("transformation", t), "chunks['transformation']"))
    u_block = min(units, v.positive_int(chunks.get("unit", units), "chunks['unit']"))
    if "sample" in chunks:
        s_block = v.positive_int(chunks["sample"], "chunks['sample']")
    else:
        s_block = max(1, DEFAULT_CHUNK_BYTES // (t_block * units * 4))
        per_batch = max(1, batch_size // t_block)  # whole forward batches per block
        if s_block > per_batch:
            s_block -= s_block % per_batch
    return min(n, s_block), t_block, u_block


# -- the public function ------------------------------------------------------------------------
def activations(
    model: Any,
    x: Any,
    transforms: TransformationSet | None = None,
    *,
    layers: Sequence[Any] | None = None,
    batch_size: int = 256,
    chunks: dict[str, int] | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    safe_mode: bool = True,
) -> xr.DataArray:
    """The lazy activation cube a[i, j, u] of a model over samples × transformations.

    Parameters
    ----------
    model : keras.Model or path
        A Keras 3 model, or a path to a ``.keras``/``.h5`` file (loaded with ``safe_mode``).
    x : numpy array, xr.DataArray, dask array or zarr array
        The untransformed samples, sample axis first (NHWC images when ``transforms`` is given).
        Lazy inputs are read block by block, never whole. A DataArray's ``sample`` and
        ``label`` coordinates are kept.
    transforms : TransformationSet, optional
        The T transformations; ``None`` means the identity only (T = 1).
    layers : list of endpoint descriptors, optional
        Which units to record: int index, name, Layer, tuple path into nested models, or
        ``{"name"|"layer": ..., "link": "output"|"input"}``. ``None``: every layer output
        except the input. An unknown descriptor raises ``ValueError`` listing valid names.
    batch_size : int, default 256
        Images per forward batch (at least one sample × the transformations of a block).
    chunks : dict, optional
        Chunk sizes ``{"sample": s, "transformation": t, "unit": u}``. Defaults: all
        transformations, all units, and as many samples as keep a block near 64 MiB.
    labels : sequence, optional
        Per-sample labels, stored as the ``label`` coordinate on ``sample``.
    safe_mode : bool, default True
        Passed to ``keras.models.load_model`` for paths, and on workers of a distributed run.

    Returns
    -------
    xr.DataArray
        ``activation``, float32, dims ``(sample, transformation, unit)``, dask-backed, with the
        transformation set's parameter coordinates, the unit coordinates ``layer``, ``channel``,
        ``y``, ``x`` (−1 where a layer has no such axis), and provenance ``attrs``.

    Notes
    -----
    Building the cube runs no forward pass. Computing it runs one forward pass per
    (sample block × transformation block), shared by all unit chunks of that block.

    Examples
    --------
    >>> cube = tmx.activations(model, x, tmx.transforms.rotation(range(0, 360, 30)))
    >>> cube.sel(unit=cube.layer == "conv1").mean("sample").compute()
    """
    import keras
    import tensorflow as tf

    from . import __version__
    from . import inspect as _inspect

    model = _inspect.load_model(model, safe_mode=safe_mode)
    batch_size = v.positive_int(batch_size, "batch_size")
    if transforms is None:
        transforms = identity()
    if not isinstance(transforms, TransformationSet):
        raise ValueError(
            f"transforms must be a TransformationSet (tmx.transforms) or None; got "
            f"{type(transforms).__name__}"
        )
    xd, sample_coord, label_coord = _as_dask_input(x)
    n = int(xd.shape[0])
    image = xd.ndim == 4
    if not image and transforms != identity():
        raise ValueError(
            f"x must be a batch of NHWC images (rank 4) to apply transformations; got shape "
            f"{tuple(xd.shape)}"
        )
    descriptors = list(_inspect.default_endpoints(model) if layers is None else layers)
    if not descriptors:
        raise ValueError("layers must name at least one layer")
    endpoints = _inspect.resolve(model, descriptors)
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ValueError(f"layers: the same endpoint is listed twice: {names}")
    shapes = [tuple(e.shape) for e in endpoints]
    coords_u = unit_coords(names, shapes)
    units = len(coords_u["layer"])
    exposed = _exposed(model, descriptors, names)

    t = len(transforms)
    s_block, t_block, u_block = _default_chunks(n, t, units, batch_size, chunks)
    xd = xd.rechunk((s_block, *xd.shape[1:]))
    runner = ForwardRunner(exposed, transforms, batch_size, image=image, safe_mode=safe_mode)

    token = hashlib.sha256(
        f"{id(runner)}-{xd.name}-{transforms.to_json()}-{names}-{batch_size}".encode()
    ).hexdigest()[:16]
    runner_key = f"tmx-model-{token}"
    forward_name = f"tmx-forward-{token}"
    name = f"tmx-activation-{token}"
    sample_index = np.arange(n, dtype=np.int64)
    s_chunks = xd.chunks[0]
    t_chunks = tuple(min(t_block, t - s) for s in range(0, t, t_block))
    u_chunks = tuple(min(u_block, units - s) for s in range(0, units, u_block))

    layer_dsk: dict[Any, Any] = {runner_key: runner}
    s_start = 0
    for i, s_len in enumerate(s_chunks):
        idx = sample_index[s_start : s_start + s_len]
        for jb, t_start in enumerate(range(0, t, t_block)):
            indices = tuple(range(t_start, min(t, t_start + t_block)))
            fkey = (forward_name, i, jb)
            in_key = (xd.name, i, *([0] * (xd.ndim - 1)))
            layer_dsk[fkey] = (_run_block, runner_key, in_key, idx, indices)
            for k, u_start in enumerate(range(0, units, u_block)):
                u_stop = min(units, u_start + u_block)
                if len(u_chunks) == 1:
                    layer_dsk[(name, i, jb, k)] = fkey
                else:
                    layer_dsk[(name, i, jb, k)] = (_slice_units, fkey, u_start, u_stop)
        s_start += s_len
    graph = HighLevelGraph.from_collections(name, layer_dsk, dependencies=[xd])
    data = da.Array(graph, name, chunks=(s_chunks, t_chunks, u_chunks), dtype=np.float32)

    coords: dict[str, Any] = {
        "sample": ("sample", sample_coord if sample_coord is not None else np.arange(n)),
        "transformation": ("transformation", np.arange(t)),
        "unit": ("unit", np.arange(units)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have one entry per sample ({n}); got {labels.shape}")
        coords["label"] = ("sample", labels)
    elif label_coord is not None:
        coords["label"] = ("sample", label_coord)
    params = transforms.parameters
    for cname in params.coords:
        if cname != "transformation":
            coords[cname] = xr.Variable("transformation", params[cname].values, params[cname].attrs)
    for cname in UNIT_COORDS:
        coords[cname] = ("unit", coords_u[cname])
    attrs = {
        "tmx_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "model_name": str(model.name),
        "model_weights_sha256": _weights_sha256(model),
        "transforms": transforms.to_json(),
        "transforms_description": transforms.description,
        "layers": list(names),
        "input_shape": [int(s) for s in xd.shape[1:]],
        "batch_size": batch_size,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords=coords,
        name="activation",
        attrs=attrs,
    )


def forward_runner(cube: xr.DataArray) -> ForwardRunner:
    """The ``ForwardRunner`` inside a cube's graph (for diagnostics and tests)."""
    graph = cube.data.__dask_graph__()
    for key, value in graph.items():
        if isinstance(key, str) and key.startswith("tmx-model-"):
            return value
    raise ValueError("cube: no tmx forward runner in this graph (was it built by activations?)")


__all__ = ["ForwardRunner", "activations", "forward_runner", "unit_coords"]
