"""A per-sample data set report: duplicates, a 2-D projection and familiarity, per layer.

Replaces DNIKit's ``DatasetReport`` (Apple, *Data and Network Introspection Kit*, 2021) with a
pure function returning an ``xr.Dataset`` indexed by sample, which can be saved to Zarr or
Parquet (:func:`save_report`) and rendered to one self-contained static HTML page
(:func:`report_html`).

The pipeline, per layer, follows DNIKit's: the layer's responses are first reduced by PCA to at
most ``precursor_components`` components (a precursor that makes the next three steps fast and their
distances meaningful), then

1. near-duplicates are found on the reduced responses (:func:`tmx.introspect.duplicates`),
2. the reduced responses are projected to 2-D for display (:func:`tmx.introspect.reduce`),
3. a Gaussian mixture is fitted to all samples ("overall" familiarity) and one per label with
   at least ``split_min`` samples ("split" familiarity, :func:`tmx.introspect.familiarity`); every
   sample is scored under each.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import _deprecation
from .. import _validate as v
from .._progress import resolve as resolve_progress
from .._progress import steps
from .._provenance import provenance
from .._schema import as_responses, layer_positions, select_layers
from .duplicates import duplicates
from .familiarity import familiarity
from .reduce import reduce

__all__ = ["open_report", "report", "report_table", "save_report"]

log = logging.getLogger("tmx")

_PROJECTIONS = ("pca", "incremental_pca", "tsne", "umap", "pacmap")


def _labels_of(responses: xr.DataArray, labels: Any) -> np.ndarray | None:
    """The labels as a 1-D array along sample, from an array or the name of a coordinate."""
    n = responses.sizes["sample"]
    if labels is None:
        if "label" in responses.coords and responses["label"].dims == ("sample",):
            return np.asarray(responses["label"].values)
        return None
    if isinstance(labels, str):
        if labels not in responses.coords or responses[labels].dims != ("sample",):
            raise ValueError(f"labels={labels!r} must name a coordinate along sample")
        return np.asarray(responses[labels].values)
    values = np.asarray(labels.values if isinstance(labels, xr.DataArray) else labels)
    if values.ndim != 1 or values.shape[0] != n:
        raise ValueError(
            f"labels must be one value per sample (length {n}) or the name of a sample "
            f"coordinate; got shape {values.shape}"
        )
    return values


def _reduced(responses: xr.DataArray, layers: list[str], dims: int | None, seed: int):
    """Responses (sample, unit) of each layer reduced by PCA to at most ``dims`` components,
    concatenated along unit with the ``layer`` coordinate; and the kept components per layer."""
    parts, kept = [], {}
    for layer in layers:
        pos = layer_positions(responses, layer)
        if dims is None:
            sub = responses.isel(unit=pos)
            values = np.asarray(sub.data if isinstance(sub.data, np.ndarray) else sub.values)
            values = values.astype(np.float64)
        else:
            k = int(min(dims, pos.size, responses.sizes["sample"]))
            proj = reduce(responses, "pca", k, layers=[layer], seed=seed, progress=False)
            values = np.asarray(proj.isel(layer=0).values)
        kept[layer] = values.shape[1]
        parts.append(values)
    values = np.concatenate(parts, axis=1)
    layer_coord = np.concatenate([np.full(kept[layer], layer) for layer in layers])
    return (
        xr.DataArray(
            values,
            dims=("sample", "unit"),
            coords={"sample": responses["sample"].values, "layer": ("unit", layer_coord)},
        ),
        kept,
    )


def _assemble(data, chosen, label_values, dup, proj, fam) -> xr.Dataset:
    """The report's per-sample variables from the duplicates, projection and familiarity."""
    sample_coords = {k: c.variable for k, c in data.coords.items() if c.dims == ("sample",)}
    out = xr.Dataset(coords={**sample_coords, "layer": np.asarray(chosen, dtype=str)})
    if label_values is not None:
        out = out.assign_coords(label=("sample", label_values))
    out["duplicate_cluster"] = (("sample", "layer"), np.asarray(dup["duplicate_cluster"].values))
    out["projection"] = (("sample", "layer", "component"), np.asarray(proj.values))
    out = out.assign_coords(component=np.arange(2))
    out["familiarity"] = (("sample", "layer"), np.asarray(fam["familiarity"].values))
    return out


def _with_split_familiarity(
    out, reduced, label_values, split_min, n_components, covariance, seed
) -> xr.Dataset:
    """Familiarity under one mixture per label with at least ``split_min`` samples."""
    n, n_layers = out.sizes["sample"], out.sizes["layer"]
    uniques, counts = np.unique(label_values, return_counts=True)
    big = uniques[counts >= split_min]
    split = np.full((n, n_layers, uniques.size), np.nan)
    if big.size:
        in_big = np.isin(label_values, big)
        fit_on = reduced.isel(sample=np.flatnonzero(in_big))
        split_fam = familiarity(
            fit_on,
            reduced,
            n_components=n_components,
            covariance=covariance,
            seed=seed,
            by="label",
            progress=False,
        )
        for m, value in enumerate(np.asarray(split_fam["label_model"].values)):
            u = int(np.flatnonzero(uniques == value)[0])
            split[:, :, u] = split_fam["familiarity"].values[:, :, m]
    own = np.full((n, n_layers), np.nan)
    for u, value in enumerate(uniques):
        rows = np.flatnonzero(label_values == value)
        own[rows] = split[rows, :, u]
    out = out.assign_coords(label_model=uniques)
    out["familiarity_split"] = (("sample", "layer", "label_model"), split)
    out["familiarity_own"] = (("sample", "layer"), own)
    out["label_count"] = (("label_model",), counts.astype(np.int64))
    return out


def report(
    responses: Any,
    labels: Any = None,
    *,
    layers: list[str] | None = None,
    transformation: Any = None,
    precursor_components: int | None = 40,
    projection: str = "pca",
    projection_options: dict[str, Any] | None = None,
    mixture_components: int = 5,
    covariance: str = "diag",
    split_min: int = 50,
    duplicates_threshold: Any = "slope",
    duplicates_options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool | None = None,
    reduce_dims: Any = _deprecation.UNSET,
    components: Any = _deprecation.UNSET,
) -> xr.Dataset:
    """A per-sample report of a data set seen through a network's layers.

    Parameters
    ----------
    responses : xr.DataArray
        A cube ``(sample, transformation, unit)`` or responses ``(sample, unit)`` with a
        ``layer`` coordinate on unit (see ``tmx.introspect.as_responses``).
    labels : array-like or str, optional
        One label per sample, or the name of a sample coordinate. Default: the ``label``
        coordinate when there is one, otherwise no labels (no split familiarity).
    layers : list of str, optional
        Layers to report on (default: all).
    transformation : None, int or "stack"
        How a cube becomes responses (one transformation, or every (sample, transformation)).
    precursor_components : int or None, default 40
        The PCA precursor: each layer is reduced to ``min(precursor_components, units,
        samples)`` principal components before duplicates, projection and familiarity, as
        DNIKit's report does. ``None`` uses the raw responses.
    projection : {"pca", "incremental_pca", "tsne", "umap", "pacmap"}, default "pca"
        The 2-D projection for display (DNIKit's default is UMAP; PCA is the default here
        because it is deterministic and needs no optional package).
    projection_options : dict, optional
        Extra keyword arguments of the projection method.
    mixture_components, covariance : int, str
        The Gaussian mixtures of the familiarity: their ``n_components`` and ``covariance``
        (see :func:`tmx.introspect.familiarity`).
    split_min : int, default 50
        A label gets its own mixture ("split" familiarity) only with at least this many
        samples (DNIKit's default); other labels' split scores are NaN.
    duplicates_threshold : default "slope"
        The ``threshold`` of :func:`tmx.introspect.duplicates`.
    duplicates_options : dict, optional
        Other keyword arguments of :func:`tmx.introspect.duplicates` (``k``, ``sensitivity``,
        ``index``, ``normalize``).
    seed : int, default 0
        Seed of the PCA, projection, mixtures and approximate index: the same seed gives the
        same report.
    progress : bool or None, default None
        A progress bar over the report's stages; None: when run interactively (a terminal, not
        under pytest or CI). The stages are logged on the ``tmx`` logger (INFO).
    reduce_dims : int or None
        Deprecated name of ``precursor_components`` (warns).
    components : int
        Deprecated name of ``mixture_components`` (warns).

    Returns
    -------
    xr.Dataset
        Indexed by ``sample`` (the responses' sample coordinate and other sample coordinates
        are kept), with ``layer`` and ``component`` dims:

        - ``label`` (sample), when labels are known;
        - ``duplicate_cluster`` (sample, layer): the near-duplicate cluster, −1 when none;
        - ``projection`` (sample, layer, component): the 2-D projection;
        - ``familiarity`` (sample, layer): log-likelihood under the overall mixture (higher =
          more familiar);
        - ``familiarity_split`` (sample, layer, label_model): under each label's mixture, and
          ``familiarity_own`` (sample, layer): under the mixture of the sample's own label
          (NaN where that label has fewer than ``split_min`` samples); only with labels;
        - ``reduced_dims`` (layer): components kept by the PCA precursor.

        ``attrs`` say how it was computed (options, N, time, tmx version). **Computes**:
        every stage fits on the data (PCA, nearest neighbours, mixtures), so the report is in
        memory whatever the responses' backend (dask-backed ones give the same numbers).

    References
    ----------
    Apple, *Data and Network Introspection Kit (DNIKit)*, "Dataset Report", 2021.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> responses = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(12, 3)),
    ...     dims=("sample", "unit"),
    ...     coords={"layer": ("unit", ["h"] * 3), "label": ("sample", [0, 1] * 6)},
    ... )
    >>> rep = introspect.report(
    ...     responses, precursor_components=2, mixture_components=1, split_min=5
    ... )
    >>> dict(rep.sizes)
    {'sample': 12, 'layer': 1, 'component': 2, 'label_model': 2}
    >>> rep["reduced_dims"].values, rep["familiarity_own"].dims
    (array([2]), ('sample', 'layer'))
    """
    precursor_components = _deprecation.renamed(
        "report", "reduce_dims", "precursor_components", reduce_dims, precursor_components, 40
    )
    mixture_components = _deprecation.renamed(
        "report", "components", "mixture_components", components, mixture_components, 5
    )
    _check_arguments(projection, precursor_components, split_min)
    seed = v.seed(seed)
    progress = resolve_progress(progress)
    data = as_responses(responses, transformation=transformation)
    label_values = _labels_of(data, labels)
    chosen = select_layers(data, layers)

    with steps(5 if label_values is not None else 4, progress, unit="stage") as bar:
        log.info("report: PCA precursor of %d layer(s)", len(chosen))
        reduced, kept = _reduced(data, chosen, precursor_components, seed)
        if label_values is not None:
            reduced = reduced.assign_coords(label=("sample", label_values))
        bar.advance()
        log.info("report: near-duplicates")
        dup = duplicates(
            reduced,
            threshold=duplicates_threshold,
            seed=seed,
            progress=False,
            **(duplicates_options or {}),
        )
        bar.advance()
        log.info("report: %s projection", projection)
        proj = reduce(
            reduced, projection, 2, seed=seed, progress=False, **(projection_options or {})
        )
        bar.advance()
        log.info("report: familiarity")
        fam = familiarity(
            reduced,
            n_components=mixture_components,
            covariance=covariance,
            seed=seed,
            progress=False,
        )
        bar.advance()
        out = _assemble(data, chosen, label_values, dup, proj, fam)
        if label_values is not None:
            log.info("report: familiarity per label")
            out = _with_split_familiarity(
                out, reduced, label_values, split_min, mixture_components, covariance, seed
            )
            bar.advance()

    out["reduced_dims"] = (("layer",), np.asarray([kept[layer] for layer in chosen], np.int64))
    out["duplicate_threshold"] = (("layer",), np.asarray(dup["threshold"].values, np.float64))
    out.attrs = {
        "title": "tmx data set report",
        **provenance(
            "introspector",
            "report",
            n_samples=int(data.sizes["sample"]),
            precursor_components=precursor_components,
            projection=projection,
            mixture_components=int(mixture_components),
            covariance=covariance,
            split_min=int(split_min),
            duplicates_threshold=str(duplicates_threshold),
            seed=int(seed),
        ),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return out


def _check_arguments(projection: Any, precursor_components: Any, split_min: Any) -> None:
    v.choice(projection, "projection", _PROJECTIONS)
    if precursor_components is not None and (
        isinstance(precursor_components, bool)
        or not isinstance(precursor_components, int | np.integer)
        or precursor_components < 2
    ):
        raise ValueError(
            f"precursor_components must be None or an int >= 2; got {precursor_components!r}"
        )
    if isinstance(split_min, bool) or not isinstance(split_min, int | np.integer) or split_min < 1:
        raise ValueError(f"split_min must be an int >= 1; got {split_min!r}")


def save_report(report: xr.Dataset, path: str | os.PathLike[str], *, format: str | None = None):
    """Save a report to Zarr (a directory ``*.zarr``) or Parquet (``*.parquet``).

    Parameters
    ----------
    report : xr.Dataset
        The output of :func:`report`.
    path : str or path-like
        Destination. Refuses to overwrite an existing path.
    format : {"zarr", "parquet"}, optional
        Default: from the suffix of ``path``.

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    Parquet is a flat table: one row per (sample, layer), with columns ``sample``, ``layer``,
    the sample coordinates, ``duplicate_cluster``, ``projection_0``/``projection_1``,
    ``familiarity``, ``familiarity_own`` and ``familiarity_split_<label>``; the report's
    ``attrs`` go to the file's key-value metadata (key ``tmx``, JSON). It needs ``pyarrow``
    (``pip install "tmx-measures[report]"``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> responses = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(12, 3)),
    ...     dims=("sample", "unit"),
    ...     coords={"layer": ("unit", ["h"] * 3), "label": ("sample", [0, 1] * 6)},
    ... )
    >>> rep = introspect.report(
    ...     responses, precursor_components=2, mixture_components=1, split_min=5
    ... )
    >>> import pathlib, tempfile
    >>> path = introspect.save_report(rep, pathlib.Path(tempfile.mkdtemp()) / "report.zarr")
    >>> back = introspect.open_report(path)
    >>> bool(np.array_equal(back["familiarity"].values, rep["familiarity"].values))
    True
    """

    path = Path(path)
    if format is None:
        suffix = path.suffix.lower()
        format = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}.get(suffix)
        if format is None:
            raise ValueError(
                f"path must end in .zarr or .parquet (or pass format=); got {str(path)!r}"
            )
    if format not in ("zarr", "parquet"):
        raise ValueError(f'format must be "zarr" or "parquet"; got {format!r}')
    if path.exists():
        raise ValueError(f"path {str(path)!r} exists; refusing to overwrite it")
    if not isinstance(report, xr.Dataset) or "familiarity" not in report:
        raise ValueError("report must be the xr.Dataset returned by tmx.introspect.report")
    if format == "zarr":
        # strings as Zarr's variable-length UTF-8 (a specified v3 type), never as objects
        stored = report.copy()
        for name, coord in report.coords.items():
            if coord.dtype.kind == "U":
                stored = stored.assign_coords({name: coord.astype(object)})
        stored.to_zarr(path, mode="w-", consolidated=False)
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            'Parquet needs the optional package pyarrow: pip install "tmx-measures[report]"'
        ) from err
    table = report_table(report)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[b"tmx"] = json.dumps(report.attrs, default=str).encode()
    pq.write_table(arrow.replace_schema_metadata(meta), path)
    return path


_REQUIRED = {
    "duplicate_cluster": (("sample", "layer"), "i"),
    "projection": (("sample", "layer", "component"), "f"),
    "familiarity": (("sample", "layer"), "f"),
}


def open_report(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read back a report saved to Zarr by :func:`save_report`, validated, into memory.

    The store is checked before its data is read: it must be a Zarr group holding the
    report's variables with their dims and numeric dtypes (``duplicate_cluster`` integer,
    ``projection`` and ``familiarity`` float); object arrays are read only as strings, nothing
    is ever unpickled. String coordinates come back as ``str``.

    Raises
    ------
    ValueError
        When ``path`` is not a directory holding a Zarr store of a tmx report.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> responses = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(12, 3)),
    ...     dims=("sample", "unit"),
    ...     coords={"layer": ("unit", ["h"] * 3), "label": ("sample", [0, 1] * 6)},
    ... )
    >>> rep = introspect.report(
    ...     responses, precursor_components=2, mixture_components=1, split_min=5
    ... )
    >>> import pathlib, tempfile
    >>> path = introspect.save_report(rep, pathlib.Path(tempfile.mkdtemp()) / "report.zarr")
    >>> sorted(introspect.open_report(path).data_vars)[:3]
    ['duplicate_cluster', 'duplicate_threshold', 'familiarity']
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise ValueError(f"path {str(path)!r} is not a Zarr (v3) store written by save_report")
    ds = xr.open_zarr(path, consolidated=False, decode_times=False)
    for name, (dims, kind) in _REQUIRED.items():
        if name not in ds:
            raise ValueError(f"store {str(path)!r} is not a tmx report: no variable {name!r}")
        if ds[name].dims != dims or ds[name].dtype.kind != kind:
            raise ValueError(
                f"store {str(path)!r}: {name!r} should have dims {dims} and a "
                f"{'float' if kind == 'f' else 'integer'} dtype; found {ds[name].dims} "
                f"{ds[name].dtype}"
            )
    for name, var in ds.variables.items():
        if var.dtype.kind == "O" and not all(isinstance(v, str) for v in np.ravel(var.values)):
            raise ValueError(f"store {str(path)!r}: {name!r} holds non-string objects")
    ds = ds.load()
    for name, coord in ds.coords.items():
        if coord.dtype.kind in "OT":
            values = np.asarray(coord.values).tolist()
            ds = ds.assign_coords({name: (coord.dims, np.asarray(values, dtype=str))})
    return ds


def report_table(report: xr.Dataset):
    """The report as a flat ``pandas.DataFrame``: one row per (sample, layer).

    Columns: ``sample``, ``layer``, the other sample coordinates, ``duplicate_cluster``,
    ``familiarity``, ``familiarity_own``, ``projection_<c>`` and ``familiarity_split_<label>``
    (those present in the report).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> responses = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(12, 3)),
    ...     dims=("sample", "unit"),
    ...     coords={"layer": ("unit", ["h"] * 3), "label": ("sample", [0, 1] * 6)},
    ... )
    >>> rep = introspect.report(
    ...     responses, precursor_components=2, mixture_components=1, split_min=5
    ... )
    >>> table = introspect.report_table(rep)
    >>> table.shape, table.columns.tolist()[:4]
    ((12, 10), ['sample', 'layer', 'label', 'duplicate_cluster'])
    """

    n, layers = report.sizes["sample"], [str(v) for v in report["layer"].values]
    columns: dict[str, Any] = {
        "sample": np.repeat(report["sample"].values, len(layers)),
        "layer": np.tile(np.asarray(layers, dtype=object), n),
    }
    for name, coord in report.coords.items():
        if coord.dims == ("sample",) and name != "sample":
            columns[str(name)] = np.repeat(coord.values, len(layers))
    for name in ("duplicate_cluster", "familiarity", "familiarity_own"):
        if name in report:
            columns[name] = report[name].transpose("sample", "layer").values.reshape(-1)
    proj = report["projection"].transpose("sample", "layer", "component").values
    for c in range(proj.shape[-1]):
        columns[f"projection_{c}"] = proj[:, :, c].reshape(-1)
    if "familiarity_split" in report:
        split = report["familiarity_split"].transpose("sample", "layer", "label_model").values
        for m, value in enumerate(report["label_model"].values):
            columns[f"familiarity_split_{value}"] = split[:, :, m].reshape(-1)
    return pd.DataFrame(columns)
