"""Accuracy under transformations, and a measure beside accuracy per transformation group.

``evaluate`` answers "how well does the model do under each transformation?"; ``analyze``
answers the seed package's question "does the invariance measure of a group of transformations
go with the accuracy under that group?" — without its side effects: it is a pure function (the
seed's Analyzer transposed its data set in place, so a second call swapped TV and SV).

Both run the model through the same compiled, fixed-batch forward pass as ``tmx.activations``;
``analyze`` records the measured layers and the model output in one cube per group, so the
measure and the accuracy come from one forward pass per block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from . import _progress
from . import _validate as v
from . import inspect as _inspect
from ._graph import model_graph, nodes_by_op
from ._provenance import provenance
from ._schema import layer_array
from ._validate import check_sizes
from .cube import activations
from .measures import by_layer, normalized_variance
from .transforms import TransformationSet, seed_groups

log = logging.getLogger("tmx")


def _labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y.values if isinstance(y, xr.DataArray) else y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(axis=1)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(
            f"y must hold one integer class per sample ({n},) or one-hot rows (N, C); got "
            f"shape {y.shape} and dtype {y.dtype}"
        )
    return y.astype(np.int64)


def _output_endpoint(model: Any, output: Any) -> tuple[Any, str]:
    """The endpoint descriptor and name of the model output to score.

    A functional or Sequential model's outputs are ``model.outputs`` (never
    ``model.layers[-1]``, which need not be an output); a subclassed model has one, its
    endpoint ``-1``. ``output``: None (the only output), an index into the outputs, or a name
    (the output's endpoint name, or its entry of ``model.output_names``).
    """
    tensors = list(getattr(model, "outputs", None) or [])
    if not tensors:  # a subclassed model: its output is the endpoint -1
        if output not in (None, 0, -1, getattr(model, "name", None)):
            raise ValueError(
                f"output={output!r}: model {model.name!r} is a subclassed model with one known "
                "output; leave output=None"
            )
        return -1, _inspect.resolve(model, [-1])[0].name
    nodes = nodes_by_op(model_graph(model))
    descriptors = []
    for t in tensors:
        op, node_index, tensor_index = t._keras_history
        node = op._inbound_nodes[node_index]
        call = next(k for k, n in enumerate(nodes[id(op)]) if n is node)
        descriptors.append({"name": op.name, "call": call, "index": tensor_index})
    names = [e.name for e in _inspect.resolve(model, descriptors)]
    aliases = list(getattr(model, "output_names", None) or [])
    if len(aliases) != len(names):
        aliases = names
    listing = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if output is None:
        if len(names) > 1:
            raise ValueError(
                f"model {model.name!r} has {len(names)} outputs ({listing}); pass output= (a "
                "name or an index) to choose the classifier head to score"
            )
        index = 0
    elif isinstance(output, str):
        if output in names:
            index = names.index(output)
        elif output in aliases:
            index = aliases.index(output)
        else:
            raise ValueError(
                f"output={output!r} names no output of the model; its outputs: {listing}"
            )
    elif isinstance(output, int | np.integer) and not isinstance(output, bool):
        if not -len(names) <= output < len(names):
            raise ValueError(
                f"output={output} is out of range for the model's {len(names)} output(s) "
                f"({listing})"
            )
        index = int(output) % len(names)
    else:
        raise ValueError(f"output must be None, an output name or an index; got {output!r}")
    return descriptors[index], names[index]


def _scores(outputs: Any, y: np.ndarray, from_logits: bool | None) -> dict[str, Any]:
    """Accuracy and mean cross-entropy per transformation from outputs (N, T, C).

    ``outputs`` in memory gives numbers; a dask array gives dask arrays (lazy), which needs
    ``from_logits`` decided (True or False), since deciding it reads every output."""
    lazy = isinstance(outputs, da.Array)
    if lazy:
        outputs = outputs.astype(np.float64)
    else:
        outputs = np.asarray(outputs, dtype=np.float64)
    n_classes = outputs.shape[2]
    if y.max(initial=0) >= n_classes or y.min(initial=0) < 0:
        raise ValueError(f"y has classes outside 0..{n_classes - 1} (the model's outputs)")
    if from_logits is None:  # probabilities: in [0, 1] with rows summing to 1
        if lazy:
            raise AssertionError("from_logits must be decided for lazy outputs")
        sums = outputs.sum(axis=2)
        from_logits = not (
            (outputs >= 0).all() and (outputs <= 1).all() and np.allclose(sums, 1, atol=1e-3)
        )
    if from_logits:
        shifted = outputs - outputs.max(axis=2, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    else:
        log_p = np.log(np.clip(outputs, 1e-7, 1.0))
    if lazy:  # the true class's log p: one value and zeros summed, exactly that value
        hit = y[:, None, None] == np.arange(n_classes)[None, None, :]
        picked = da.where(hit, log_p, 0.0).sum(axis=2)
    else:
        picked = np.take_along_axis(log_p, y[:, None, None], axis=2)[:, :, 0]  # (N, T)
    correct = outputs.argmax(axis=2) == y[:, None]
    return {
        "accuracy": correct.mean(axis=0),
        "loss": -picked.mean(axis=0),
        "from_logits": bool(from_logits),
    }


def evaluate(
    model: Any,
    x: Any,
    y: Any,
    transforms: TransformationSet | None = None,
    *,
    batch_size: int = 256,
    from_logits: bool | None = None,
    output: Any = None,
    progress: bool | None = None,
    safe_mode: bool = True,
) -> xr.Dataset:
    """Accuracy and loss of a classifier under each transformation.

    With o_ij the model's output for transformation g_j of sample x_i and y_i its class, over
    the N samples: accuracy_j = (1/N) Σ_i [argmax_c o_ijc = y_i] and
    loss_j = −(1/N) Σ_i log p_ij(y_i), with p = softmax(o) for logits and p = clip(o, 1e-7, 1)
    for probabilities: the cross-entropy of the true class (Goodfellow, Bengio & Courville
    2016, *Deep Learning*, ch. 6.2.2).

    Parameters
    ----------
    model : keras.Model or path
        A classifier whose output (``output`` of several) is class logits or probabilities.
    x : array-like
        Untransformed samples (as for ``tmx.activations``): numpy, an xr.DataArray, a dask
        array or a zarr array.
    y : array-like
        Integer classes (N,) or one-hot rows (N, C).
    transforms : TransformationSet, optional
        Default: the identity.
    batch_size : int, default 256
    from_logits : bool, optional
        Whether the outputs are logits; default: probabilities if every output row lies in
        [0, 1] and sums to 1, logits otherwise.
    output : int or str, optional
        Which of the model's outputs (``model.outputs``) is scored: an index or a name (the
        output layer's name, or its ``model.output_names`` entry). Required when the model has
        several outputs; the only output otherwise.
    progress : bool or None, default None
        A bar over the forward passes (blocks of samples × transformations done out of the
        total), shown when they run: here, or at ``.compute()`` for a lazy result. None: when
        run interactively (a terminal, not under pytest or CI).

    Returns
    -------
    xr.Dataset
        Over ``transformation`` (with the set's parameter coordinates): ``accuracy`` (fraction
        of samples whose largest output is the true class) and ``loss`` (mean cross-entropy
        −log p_y, probabilities clipped at 1e-7); ``attrs["output"]`` names the scored output
        and ``attrs["from_logits"]`` how the outputs were read (1: logits, 0: probabilities);
        ``attrs`` also record ``function`` = "evaluate", ``n_samples``, ``model_name``,
        ``transforms_description`` and ``tmx_version``.

    Raises
    ------
    ValueError
        For a model with several outputs and ``output=None`` (the message lists them), an
        unknown output, labels that do not fit the output, or a ``progress`` that is not
        True, False or None.

    Notes
    -----
    Lazy in, lazy out where it can be: for a lazy ``x`` (a dask or zarr array, or a
    DataArray holding one) and ``from_logits`` given, ``accuracy`` and ``loss`` are dask
    arrays, and the forward passes run when they are computed (``ds.compute()`` runs them
    once for both; computing ``accuracy`` and then ``loss`` separately runs them twice). It
    computes here, once, when ``x`` is in memory (numpy), and when ``from_logits`` is None,
    since telling probabilities from logits reads every output (pass ``from_logits`` to keep
    a lazy ``x`` lazy). The numbers are the same either way (up to the order of the float64
    sums over samples). What it does is logged to the ``"tmx"`` logger (INFO).

    Examples
    --------
    >>> import numpy as np, keras, tmx
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential(
    ...     [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="dense")]
    ... )
    >>> x = np.random.default_rng(0).random((6, 8, 8, 1)).astype("float32")
    >>> y = np.array([0, 1, 2, 0, 1, 2])
    >>> ev = tmx.evaluate(model, x, y, tmx.transforms.rotation([0, 90]))
    >>> dict(ev.sizes), ev.angle.values.tolist(), ev.attrs["output"]
    ({'transformation': 2}, [0.0, 90.0], 'dense')
    >>> logits = model.predict(x, verbose=0)      # rotation(0) is the identity
    >>> bool(np.isclose(ev.accuracy[0], np.mean(logits.argmax(axis=1) == y)))
    True
    >>> import dask.array as da                   # lazy x, from_logits given: lazy result
    >>> lazy = tmx.evaluate(model, da.from_array(x, chunks=3), y,
    ...                     tmx.transforms.rotation([0, 90]), from_logits=True)
    >>> type(lazy.accuracy.data).__name__, bool(np.allclose(lazy.accuracy, ev.accuracy))
    ('Array', True)
    """
    show = _progress.resolve(progress)
    if from_logits is not None and not isinstance(from_logits, bool | np.bool_):
        raise ValueError(f"from_logits must be True, False or None; got {from_logits!r}")
    model = _inspect.load_model(model, safe_mode=safe_mode)
    desc, _ = _output_endpoint(model, output)
    cube = activations(
        model,
        x,
        transforms,
        layers=[desc],
        batch_size=batch_size,
        progress=show,
        safe_mode=safe_mode,
    )
    y = _labels(y, cube.sizes["sample"])
    lazy = _is_lazy(x) and from_logits is not None
    if lazy:
        plan = "lazy: the forward passes run when the result is computed"
    elif _is_lazy(x):
        plan = "computed now: from_logits=None reads every output to decide"
    else:
        plan = "computed now (x in memory)"
    log.info(
        "evaluate: output %r over %d sample(s) x %d transformation(s); %s",
        str(cube.layer.values[0]) if cube.sizes["unit"] else "",
        cube.sizes["sample"],
        cube.sizes["transformation"],
        plan,
    )
    scores = _scores(cube.data if lazy else cube.values, y, from_logits)
    return _score_dataset(cube, scores)


def _is_lazy(x: Any) -> bool:
    """Whether ``x`` is read lazily (a dask or zarr array, or a DataArray holding one)."""
    data = x.data if isinstance(x, xr.DataArray) else x
    return isinstance(data, da.Array) or type(data).__module__.startswith("zarr")


def _score_dataset(cube: xr.DataArray, scores: dict[str, Any]) -> xr.Dataset:
    coords = {k: c for k, c in cube.coords.items() if c.dims == ("transformation",)}
    ds = xr.Dataset(
        {
            "accuracy": ("transformation", scores["accuracy"], {"long_name": "accuracy"}),
            "loss": ("transformation", scores["loss"], {"long_name": "mean cross-entropy"}),
        },
        coords=coords,
    )
    ds.attrs = provenance(
        "function",
        "evaluate",
        n_samples=int(cube.sizes["sample"]),
        output=str(cube.layer.values[0]) if cube.sizes["unit"] else "",
        from_logits=scores["from_logits"],
        model_name=cube.attrs.get("model_name", ""),
        transforms_description=cube.attrs.get("transforms_description", ""),
    )
    return ds


def analyze(
    model: Any,
    x: Any,
    y: Any,
    groups: Mapping[str, TransformationSet] | None = None,
    *,
    measure: Callable[..., xr.DataArray] = normalized_variance,
    n: int = 8,
    layers: list[Any] | None = None,
    reduce: str | None = None,
    batch_size: int = 256,
    from_logits: bool | None = None,
    output: Any = None,
    progress: bool | None = None,
    safe_mode: bool = True,
    **options: Any,
) -> xr.Dataset:
    """A measure (per layer and overall) beside the accuracy, for every transformation group.

    Parameters
    ----------
    model : keras.Model or path
        A classifier (logits or probabilities as its output, ``output`` of several).
    x, y : array-like
        Untransformed NHWC samples and their integer classes (or one-hot rows).
    groups : dict of name → TransformationSet, optional
        Default: ``tmx.transforms.seed_groups(n, size=x's size)``, the seed package's seven
        MNIST groups.
    measure : callable, default ``tmx.normalized_variance``
        A per-unit measure ``measure(cube, **options)``.
    n : int, default 8
        Transformations per group when ``groups`` is None.
    layers : list, optional
        Layers to measure (descriptors as in ``tmx.activations``); default every layer.
    reduce : str, optional
        How ``tmx.by_layer`` summarises each layer; ``overall`` applies it to all units.
        Default: for ``normalized_variance``, "ratio_of_means" with
        ``bias_correction="jackknife"`` — the layer's Σ TV / Σ SV, bias-corrected, the value
        that does not move with the number of samples (pass ``bias_correction=None`` for the
        seed package's plain ratio) — and the plain mean of the unit values beside it as
        ``unit_mean``; "mean" for other measures.
    output : int or str, optional
        Which of the model's outputs is scored (as in :func:`evaluate`); required when the
        model has several. It is recorded in the cube beside the measured layers.
    progress : bool or None, default None
        Show a progress bar per group; None: when run interactively (a terminal, not under
        pytest or CI).
    **options
        Passed to the measure.

    Returns
    -------
    xr.Dataset
        Over ``group`` (and ``layer``): ``measure`` (group, layer), ``excluded`` (group, layer;
        non-finite units left out), ``overall`` (group), ``accuracy`` and ``loss`` (group; the
        mean over the group's transformations); with "ratio_of_means" also ``unit_mean``
        (group, layer; the mean of the unit NVs, which moves with N) and ``inactive`` (group,
        layer; never-active units, whose NV is only the zero-division policy's value).
        Calling it twice gives the same result. ``attrs``: ``measure`` (its name),
        ``reduce``, ``n_samples``, ``model_name``, ``output``, ``from_logits`` and
        ``option_<name>`` for each of the measure's options, in the one attr encoding (bools
        as 0/1, None as ``"None"``), and ``tmx_version``.

    Examples
    --------
    >>> import numpy as np, keras, tmx
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential(
    ...     [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="dense")]
    ... )
    >>> x = np.random.default_rng(0).random((6, 8, 8, 1)).astype("float32")
    >>> y = np.array([0, 1, 2, 0, 1, 2])
    >>> groups = {"rotation": tmx.transforms.rotation([0, 90]),
    ...           "flip": tmx.transforms.flip(["none", "x"])}
    >>> res = tmx.analyze(model, x, y, groups, layers=["dense"])
    >>> dict(res.sizes), res.attrs["reduce"]
    ({'group': 2, 'layer': 1}, 'ratio_of_means')
    >>> ev = tmx.evaluate(model, x, y, groups["flip"])   # accuracy: the group's mean
    >>> bool(np.isclose(res.accuracy.sel(group="flip"), ev.accuracy.mean()))
    True
    """
    show = _progress.resolve(progress)
    if np.ndim(x) >= 1:  # before any forward pass: the measures need two samples
        check_sizes("x", "analyze", samples=(int(np.shape(x)[0]), 2))
    model = _inspect.load_model(model, safe_mode=safe_mode)
    if groups is None:
        size = tuple(np.shape(x)[1:3])
        groups = seed_groups(v.positive_int(n, "n"), size=size)
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("groups must be a non-empty dict of name -> TransformationSet")
    for name, tset in groups.items():
        if not isinstance(tset, TransformationSet):
            raise ValueError(
                f"groups[{name!r}] must be a TransformationSet; got {type(tset).__name__}"
            )
    if not callable(measure):
        raise ValueError(f"measure must be callable; got {measure!r}")
    options = dict(options)
    reduce, ratio = _resolve_reduce(measure, reduce, options)
    descriptors = (
        _inspect.default_endpoints(model) if layers is None else _inspect.descriptor_list(layers)
    )
    out_desc, out_name = _output_endpoint(model, output)
    names = [e.name for e in _inspect.resolve(model, descriptors)]
    with_output = descriptors if out_name in names else [*descriptors, out_desc]
    rows: list[xr.Dataset] = []
    for name, tset in groups.items():
        cube = activations(
            model,
            x,
            tset,
            layers=with_output,
            batch_size=batch_size,
            progress=False,
            safe_mode=safe_mode,
        )
        y_int = _labels(y, cube.sizes["sample"])
        layer = layer_array(cube)
        measured = cube.isel(unit=np.flatnonzero(np.isin(layer, names)))
        outputs = cube.isel(unit=np.flatnonzero(layer == out_name))
        per_unit = measure(measured, **options)
        log.info(
            "analyze: group %r (%d of %d, %d transformation(s))",
            name,
            len(rows) + 1,
            len(groups),
            len(tset),
        )
        with _progress.dask_bar(show):
            per_unit, logits = dask.compute(per_unit, outputs.data)
        scores = _scores(logits, y_int, from_logits)
        layer_values = by_layer(per_unit, reduce=reduce)
        overall = by_layer(
            per_unit.assign_coords(layer=("unit", np.full(per_unit.sizes["unit"], "all"))),
            reduce=reduce,
        )
        extra = ["units", "excluded", "inactive", "jackknife_se", "uncorrected"]
        row = {
            "measure": layer_values.drop_vars(extra, errors="ignore"),
            "excluded": layer_values["excluded"].drop_vars(extra[:1], errors="ignore"),
            "overall": overall.isel(layer=0, drop=True).drop_vars(extra, errors="ignore"),
            "accuracy": float(np.mean(scores["accuracy"])),
            "loss": float(np.mean(scores["loss"])),
            "n_transformations": len(tset),
        }
        if ratio:
            raw = per_unit["nv_raw" if "nv_raw" in per_unit else "nv"]
            row["unit_mean"] = by_layer(raw, reduce="mean").drop_vars(extra, errors="ignore")
            row["inactive"] = layer_values["inactive"].drop_vars(extra, errors="ignore")
        rows.append(xr.Dataset({k: _plain(v) for k, v in row.items()}))
    result = xr.concat(rows, dim="group", coords="minimal", compat="override")
    result = result.assign_coords(group=("group", np.array(list(groups), dtype=str)))
    long_name = getattr(measure, "__name__", "measure")
    if ratio:
        corrected = options.get("bias_correction") == "jackknife"
        long_name += " (layer Σ TV / Σ SV" + (", jackknife bias-corrected)" if corrected else ")")
        result["unit_mean"].attrs = {
            "long_name": "mean of the unit values (moves with the number of samples)"
        }
        result["inactive"].attrs = {"long_name": "never-active units (TV = SV = 0)"}
    result["measure"].attrs = {"long_name": long_name}
    result.attrs = provenance(
        "measure",
        getattr(measure, "__name__", "measure"),
        reduce=reduce,
        n_samples=int(np.shape(x)[0]),
        model_name=str(model.name),
        output=out_name,
        from_logits=from_logits,
        **{f"option_{k}": val for k, val in options.items()},
    )
    return result


def _resolve_reduce(measure: Callable, reduce: str | None, options: dict) -> tuple[str, bool]:
    """The layer summary; for the ratio of means, ask the measure for its parts (and, by
    default, the jackknife). ``options`` is updated in place."""
    if reduce is None:
        reduce = "ratio_of_means" if measure is normalized_variance else "mean"
        if reduce == "ratio_of_means":
            options.setdefault("bias_correction", "jackknife")
    if reduce != "ratio_of_means":
        return reduce, False
    if measure is not normalized_variance:
        raise ValueError(
            "reduce='ratio_of_means' needs measure=tmx.normalized_variance (its tv and sv parts)"
        )
    options["parts"] = True
    return reduce, True


def _plain(value: Any) -> Any:
    """A row's value without the per-layer coordinates that vary between groups."""
    if isinstance(value, xr.DataArray):
        keep = {"layer"}
        return value.drop_vars([c for c in value.coords if c not in keep])
    return value
