"""Diagnostics of interpretation flows: invertibility and log-determinants, and disentanglement.

``check`` verifies the two properties a flow's loss and edits rely on, sample by sample: the
inverse really inverts (``T⁻¹(T(x)) = x``) and the reported log-determinant is the log |det| of
the Jacobian computed by automatic differentiation.  ``disentanglement`` measures how much of
each known factor (identity, angle, label, ...) is linearly readable from each factor block of
the latent code, on held-out rows (Esser, Rombach & Ommer 2020, "A Disentangling Invertible
Interpretation Network for Explaining Latent Representations", CVPR, arXiv:2004.13166).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _progress
from .. import _validate as v
from .._memo import memo, per_object
from .._provenance import provenance
from .._validate import str_array
from ._latent import _check_flow, _units

__all__ = ["check", "disentanglement"]

_REFERENCE = "Esser, Rombach & Ommer (2020), arXiv:2004.13166"
_JACOBIAN_ELEMENTS = 2**24  # Jacobian entries per call (64 MiB in float32)
_COMPILED = per_object()
log = logging.getLogger("tmx")


# -- check -----------------------------------------------------------------------------------------
def _compiled(flow: Any, d: int, jacobian: bool) -> Any:
    """(x) ↦ (y, logdet, x_back, logdet_inverse[, J]) on [batch, D], traced once per flow."""
    dtype = flow.compute_dtype

    def build() -> Any:
        ref = weakref.ref(flow)

        @tf.function(input_signature=[tf.TensorSpec((None, d), dtype)])
        def run(x: Any) -> Any:
            f = ref()
            assert f is not None  # run is only called through the flow it was built for
            if jacobian:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y, logdet = f(x)
                jac = tape.batch_jacobian(y, x)
            else:
                y, logdet = f(x)
            back, logdet_inv = f.inverse(y)
            out = (y, logdet, back, logdet_inv)
            return (*out, jac) if jacobian else out

        return run

    return memo(_COMPILED, flow, ("check", d, jacobian, str(dtype)), build)


def _rows(x: Any, d: int, show: bool = False) -> tuple[np.ndarray, str, dict[str, Any]]:
    """x as a [batch, D] numpy array, its row dim and the coordinates along it (a dask array
    computed, under dask's bar when ``show``)."""
    if isinstance(x, xr.DataArray):
        if "unit" not in x.dims or x.ndim != 2:
            raise ValueError(
                f"x must be a DataArray with dims (sample, unit) (any one row dim and unit); "
                f"got dims {x.dims}"
            )
        row = str(next(dim for dim in x.dims if dim != "unit"))
        x = x.transpose(row, "unit")
        coords = {k: c for k, c in x.coords.items() if c.dims == (row,)}
        data = x.data
    else:
        data, row, coords = x, "sample", {}
    if isinstance(data, da.Array):
        with _progress.dask_bar(show):
            data = data.compute()
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"x must be a [batch, units] array; got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"x must be real-valued; got dtype {arr.dtype}")
    if arr.shape[1] != d:
        raise ValueError(f"x has {arr.shape[1]} units but the flow acts on {d}; they must match")
    if arr.shape[0] == 0:
        raise ValueError("x must have at least one row")
    if row not in coords:
        coords[row] = (row, np.arange(arr.shape[0]))
    return arr, row, coords


def check(
    flow: Any,
    x: Any,
    *,
    batch_size: int = 256,
    max_units: int = 2048,
    progress: bool | None = None,
) -> xr.Dataset:
    r"""Check a flow sample by sample: inverse, log-determinant, finiteness.

    With :math:`y = T(x)`, :math:`j = \mathrm{logdet}_T(x)` as reported by the flow,
    :math:`(x', j') = T^{-1}(y)` and the Jacobian :math:`J = \partial y / \partial x`
    (``tf.GradientTape.batch_jacobian``, float32, its ``slogdet`` taken in float64):

    .. math::

        \mathrm{invert\_error} = \max_d |x'_d - x_d|, \qquad
        \mathrm{logdet\_error} = \big| j - \log|\det J| \big|, \qquad
        \mathrm{logdet\_inverse\_error} = |j + j'|.

    A correct flow has all three at float32 rounding (``≲ 1e-4`` for ``logdet_error`` with
    moderate weights); a layer with a wrong log-determinant shows up in ``logdet_error``, a
    wrong inverse in ``invert_error`` (Esser, Rombach & Ommer 2020, arXiv:2004.13166; Dinh et
    al. 2017, arXiv:1605.08803).

    **Large D.** The Jacobian is ``D × D`` per sample and costs ``D`` backward passes, so it
    is only computed when ``D ≤ max_units``; above, ``logdet_error`` is NaN (a
    ``UserWarning`` says so, and ``attrs["logdet_checked"]`` is 0) while ``invert_error``,
    ``logdet_inverse_error`` and ``finite`` are still computed.  Raise ``max_units`` to force
    the Jacobian (memory: about ``D² × 4`` bytes per sample; the rows are sent in sub-batches
    of at most 2^24 Jacobian entries), or check a flow of the same architecture on fewer units.

    Parameters
    ----------
    flow : Flow
        The flow (its data-initialised ``ActNorm`` layers must have seen data).
    x : array-like [batch, units] or xarray.DataArray (sample, unit)
        Inputs to check the flow at (dask-backed arrays are computed: pass a sample).  A
        DataArray may have another row dim than ``sample`` (e.g. ``pairs(...).a`` over
        ``pair``); the result then lies along it.
    batch_size : int
        Rows per call of the flow (and the most per Jacobian call).
    max_units : int
        The largest ``D`` for which the Jacobian is computed.
    progress : bool or None, default None
        A progress bar over the flow's calls (T, T⁻¹ and the Jacobian of one sub-batch each;
        a dask-backed ``x`` is first computed under dask's ``ProgressBar``).  None: when run
        interactively (a terminal, not under pytest or CI).  The numbers are the same with
        or without it.

    Returns
    -------
    xarray.Dataset
        Over ``sample`` (or ``x``'s row dim, with its coordinates): ``invert_error``,
        ``logdet_error``, ``logdet_inverse_error`` (float64), ``logdet`` (the flow's j,
        float64) and ``finite`` (bool: y, j, x' and j' all finite).  attrs: ``function``
        ("flows.check"), ``formula``, ``D``, ``max_units``, ``logdet_checked`` (0/1),
        ``flow``, ``reference``, ``tmx_version``.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import flows
    >>> f = flows.flow(2, blocks=1, hidden=(4,), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
    >>> _ = f(x)  # a first batch initialises the data-initialised ActNorm layers
    >>> out = flows.check(f, x)
    >>> bool(out["finite"].all()), bool(out["invert_error"].max() < 1e-5)
    (True, True)
    >>> bool(out["logdet_error"].max() < 1e-4)
    True
    """
    flow = _check_flow(flow)
    batch_size = v.positive_int(batch_size, "batch_size")
    max_units = v.positive_int(max_units, "max_units")
    show = _progress.resolve(progress)
    d = _units(flow)
    arr, row, coords = _rows(x, d, show)
    arr = arr.astype(np.dtype(flow.compute_dtype), copy=False)
    n = arr.shape[0]
    jacobian = d <= max_units
    if not jacobian:
        warnings.warn(
            f"check: the flow acts on D = {d} > max_units = {max_units} units, so the D × D "
            "Jacobian is not computed and logdet_error is NaN; pass a larger max_units to force "
            "it",
            UserWarning,
            stacklevel=2,
        )
    step = max(1, min(batch_size, _JACOBIAN_ELEMENTS // (d * d))) if jacobian else batch_size
    log.info(
        "check: %d row(s) of %d unit(s), %d call(s) of %d rows (%s)",
        n,
        d,
        -(-n // step),
        step,
        "with the Jacobian" if jacobian else f"no Jacobian: D > max_units = {max_units}",
    )
    run = _compiled(flow, d, jacobian)
    invert = np.empty(n)
    logdet_error = np.full(n, np.nan)
    inverse_error = np.empty(n)
    logdet = np.empty(n)
    finite = np.empty(n, dtype=bool)
    with _progress.steps(-(-n // step), show, "batch") as bar:
        for start in range(0, n, step):
            xb = arr[start : start + step]
            out = [t.numpy() for t in run(xb)]
            y, j, back, j_inv = (np.asarray(o, dtype=np.float64) for o in out[:4])
            sl = slice(start, start + xb.shape[0])
            invert[sl] = np.max(np.abs(back - xb.astype(np.float64)), axis=1)
            inverse_error[sl] = np.abs(j + j_inv)
            logdet[sl] = j
            finite[sl] = (
                np.all(np.isfinite(y), axis=1)
                & np.isfinite(j)
                & np.all(np.isfinite(back), axis=1)
                & np.isfinite(j_inv)
            )
            if jacobian:
                sign, logabs = np.linalg.slogdet(np.asarray(out[4], dtype=np.float64))
                logabs = np.where(sign == 0, -np.inf, logabs)
                logdet_error[sl] = np.abs(j - logabs)
            bar.advance()
    attrs = provenance(
        "function",
        "flows.check",
        formula=(
            "invert_error = max_d |T^-1(T(x))_d - x_d|; logdet_error = |logdet_T(x) - "
            "log|det dT/dx||, the Jacobian by tf.GradientTape.batch_jacobian (float32), slogdet "
            "in float64; logdet_inverse_error = |logdet_T(x) + logdet_T^-1(T(x))|; finite = "
            "T(x), its logdet, T^-1(T(x)) and its logdet all finite"
        ),
        D=int(d),
        max_units=int(max_units),
        logdet_checked=bool(jacobian),
        flow=str(flow.name),
        reference=_REFERENCE,
    )
    dims = (row,)
    return xr.Dataset(
        {
            "invert_error": (dims, invert),
            "logdet_error": (dims, logdet_error),
            "logdet_inverse_error": (dims, inverse_error),
            "logdet": (dims, logdet),
            "finite": (dims, finite),
        },
        coords=coords,
        attrs=attrs,
    )


# -- disentanglement -------------------------------------------------------------------------------
def _check_z(z: Any) -> tuple[xr.DataArray, list[str], np.ndarray]:
    if not isinstance(z, xr.DataArray):
        raise ValueError(
            f"z must be the latent DataArray from tmx.flows.transform; got {type(z).__name__}"
        )
    if "latent" not in z.dims:
        raise ValueError(f"z must have a 'latent' dim (from tmx.flows.transform); got {z.dims}")
    if "factor" not in z.coords or z["factor"].dims != ("latent",):
        raise ValueError(
            "z must have a 'factor' coordinate along latent (from tmx.flows.transform)"
        )
    if z.ndim < 2:
        raise ValueError(f"z must have at least one dim besides 'latent'; got {z.dims}")
    if z.dtype.kind not in "biuf":
        raise ValueError(f"z must be real-valued; got dtype {z.dtype}")
    per_dim = str_array(z["factor"].values)
    present = list(dict.fromkeys(per_dim.tolist()))
    factors = [str(f) for f in z.attrs.get("factors", [])]
    # the flow's factor list (with zero-size blocks) when transform's attrs agree with the coord
    if not factors or not set(present) <= set(factors):
        factors = present
    return z, factors, per_dim


def _as_targets(targets: Any, z: xr.DataArray) -> xr.Dataset:
    if isinstance(targets, str):
        targets = [targets]
    if isinstance(targets, Sequence) and not isinstance(targets, bytes):
        names = list(targets)
        for name in names:
            if not isinstance(name, str) or name not in z.coords or "latent" in z[name].dims:
                valid = [str(k) for k, c in z.coords.items() if "latent" not in c.dims]
                raise ValueError(
                    f"targets: {name!r} is not a coordinate of z; pass an xarray.Dataset of "
                    f"known factor values or names among {valid}"
                )
        targets = xr.Dataset({name: z[name].reset_coords(drop=True) for name in names})
    elif isinstance(targets, xr.DataArray):
        if targets.name is None:
            raise ValueError("targets: a DataArray target needs a name (or pass a Dataset)")
        targets = targets.to_dataset()
    if not isinstance(targets, xr.Dataset):
        raise ValueError(
            f"targets must be an xarray.Dataset of known factor values (or names of z's "
            f"coordinates); got {type(targets).__name__}"
        )
    if not targets.data_vars:
        raise ValueError("targets must have at least one data variable")
    return targets


def _target_matrix(
    name: str, target: xr.DataArray, template: xr.DataArray, row_dims: list[str]
) -> np.ndarray:
    """One target as a (rows, columns) float64 matrix over z's flattened rows."""
    shared = [dim for dim in target.dims if dim in row_dims]
    extra = [dim for dim in target.dims if dim not in row_dims]
    if not shared:
        raise ValueError(
            f"targets: {name!r} has dims {target.dims}, none of z's {tuple(row_dims)}; each "
            "target must lie along some of them (e.g. sample or transformation)"
        )
    if len(extra) > 1:
        raise ValueError(
            f"targets: {name!r} has unknown dims {extra}; a target lies along z's dims "
            f"{tuple(row_dims)} plus at most one column dim (a multivariate target)"
        )
    target = target.reset_coords(drop=True)
    for dim in shared:
        if target.sizes[dim] != template.sizes[dim]:
            raise ValueError(
                f"targets: {name!r} has {target.sizes[dim]} values along {dim!r}, z has "
                f"{template.sizes[dim]}"
            )
        if dim in target.indexes and dim in template.indexes:
            if not target.indexes[dim].equals(template.indexes[dim]):
                raise ValueError(
                    f"targets: {name!r} has other {dim!r} coordinates than z; they must be equal"
                )
        elif dim in target.indexes:
            target = target.drop_vars(dim)
    if target.dtype.kind in "OSU":
        if extra:
            raise ValueError(
                f"targets: {name!r} is categorical with a column dim {extra}; a categorical "
                "target must be one column (it is one-hot encoded here)"
            )
        values = str_array(target.values)
        target = xr.concat(
            [xr.DataArray(values == c, dims=target.dims) for c in np.unique(values)],
            dim="_category",
        )
        extra = ["_category"]
    elif target.dtype.kind not in "biuf":
        raise ValueError(
            f"targets: {name!r} must be real-valued or categorical; got dtype {target.dtype}"
        )
    template = template.drop_vars([k for k in template.coords if k in row_dims])
    full = target.astype(np.float64).broadcast_like(template)
    full = full.transpose(*row_dims, *extra)
    rows = int(np.prod([template.sizes[dim] for dim in row_dims], dtype=np.int64))
    return np.asarray(full.values).reshape(rows, -1)


def _r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out R² of ordinary least squares with intercept, variance-weighted over columns."""
    a_train = np.column_stack([x_train, np.ones(x_train.shape[0])])
    coef, *_ = np.linalg.lstsq(a_train, y_train, rcond=None)
    pred = np.column_stack([x_test, np.ones(x_test.shape[0])]) @ coef
    ss_res = float(np.sum((y_test - pred) ** 2))
    ss_tot = float(np.sum((y_test - y_test.mean(axis=0)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan


def _split(
    z: xr.DataArray, row_dims: list[str], test_size: float, seed: int
) -> tuple[np.ndarray, str]:
    """Boolean test mask over the flattened rows, and what was split ("sample" or "row")."""
    rng = np.random.default_rng(seed)
    shape = [z.sizes[dim] for dim in row_dims]
    unit = "sample" if "sample" in row_dims else "row"
    n_groups = z.sizes["sample"] if unit == "sample" else int(np.prod(shape, dtype=np.int64))
    if n_groups < 2:
        raise ValueError(
            f"z must have at least two {unit}s to split into train and test; got {n_groups}"
        )
    n_test = min(max(round(test_size * n_groups), 1), n_groups - 1)
    test_groups = np.zeros(n_groups, dtype=bool)
    test_groups[rng.permutation(n_groups)[:n_test]] = True
    if unit == "sample":
        axis = row_dims.index("sample")
        index = [1] * len(shape)
        index[axis] = n_groups
        mask = np.broadcast_to(test_groups.reshape(index), shape).reshape(-1)
    else:
        mask = test_groups
    return mask, unit


def disentanglement(
    z: xr.DataArray, targets: Any, *, test_size: float = 0.25, seed: int = 0
) -> xr.DataArray:
    r"""Held-out linear R² of each known factor from each factor block of a latent code.

    For each factor block :math:`\tilde z_F` (the latent dimensions whose ``factor`` is F) and
    each target t (known values of a factor: an angle, a label, an identity code...), fit an
    ordinary least-squares map with intercept, :math:`\hat t = W \tilde z_F + c`, on the train
    rows, and report on the test rows

    .. math::

        R^2_{F,t} = 1 - \frac{\sum_{i \in \mathrm{test}} \sum_c (t_{ic} - \hat t_{ic})^2}
                             {\sum_{i \in \mathrm{test}} \sum_c (t_{ic} - \bar t_c)^2},

    summed over the columns c of a multivariate target (scikit-learn's ``r2_score`` with
    ``multioutput="variance_weighted"``; ``t̄`` the test mean).  A disentangled code has
    R² ≈ 1 for the block trained for a factor and ≈ 0 (or below) for the other blocks
    (Esser, Rombach & Ommer 2020, arXiv:2004.13166).  Linear readout only: a factor encoded
    non-linearly scores low.

    **Split.** Rows are z's non-latent positions (e.g. every (sample, transformation)).  If z
    has a ``sample`` dim the split is **by sample**: the samples at the first
    ``n_test = round(test_size · n)`` positions of ``numpy.random.default_rng(seed)
    .permutation(n)`` (``n`` samples; ``n_test`` clipped to [1, n − 1]) are held out with all
    their transformations, so the test rows come from samples never seen in training;
    otherwise the rows are split the same way, one by one.  Rows where a target is NaN are
    left out for that target.

    Parameters
    ----------
    z : xarray.DataArray
        A latent code from :func:`tmx.flows.transform`: a ``latent`` dim with the ``factor``
        coordinate, plus row dims such as ``sample`` and ``transformation``.  Computed here
        (pass a manageable number of rows).
    targets : xarray.Dataset or str or list of str
        Known factor values, one data variable per target, each along some of z's row dims
        (``identity(sample)``, ``angle(transformation)``, ``(sample, transformation)``) and
        broadcast over the others; their index coordinates must equal z's.  A variable with
        one extra dim is a multivariate target (its columns, e.g. a one-hot code).  Strings,
        objects and other non-numeric values are one-hot encoded (one column per category);
        numbers are used as they are: cast integer class labels to ``str`` to have them
        one-hot encoded.  A name or list of names of z's coordinates (``"label"``,
        ``"angle"``) is taken from z.
    test_size : float
        Fraction of samples (or rows) held out, in (0, 1).
    seed : int
        Seed of the split (``numpy.random.default_rng``).

    Returns
    -------
    xarray.DataArray
        ``r2`` over (factor, target), float64; NaN for factor blocks of size 0 and for
        targets constant on the test rows.  Coordinates ``dimensions`` (block sizes, on
        factor), ``n_train`` and ``n_test`` (rows used, on target).  attrs: ``function``
        ("flows.disentanglement"), ``test_size``, ``seed``, ``n_train``, ``n_test`` (rows of
        the split), ``split`` (``"sample"`` or ``"row"``), ``method``, ``formula``,
        ``reference``, ``tmx_version``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import flows
    >>> rng = np.random.default_rng(0)
    >>> angle = rng.normal(size=40)
    >>> z = xr.DataArray(
    ...     np.column_stack([rng.normal(size=40), 2.0 * angle + 1.0]),
    ...     dims=("sample", "latent"),
    ...     coords={"factor": ("latent", ["residual", "angle"]), "angle": ("sample", angle)},
    ... )
    >>> r2 = flows.disentanglement(z, "angle")
    >>> float(r2.sel(factor="angle", target="angle"))  # the angle block reads the angle
    1.0
    >>> bool(r2.sel(factor="residual", target="angle") < 0.5)
    True
    """
    z, factors, per_dim = _check_z(z)
    targets = _as_targets(targets, z)
    test_size = v.fraction(test_size, "test_size")
    seed = v.seed(seed)

    row_dims = [str(dim) for dim in z.dims if dim != "latent"]
    template = xr.zeros_like(z.isel(latent=0, drop=True), dtype=np.float64).reset_coords(drop=True)
    matrices = {
        str(name): _target_matrix(str(name), targets[name], template, row_dims)
        for name in targets.data_vars
    }
    values = np.asarray(z.transpose(*row_dims, "latent").values, dtype=np.float64)
    x = values.reshape(-1, z.sizes["latent"])
    if not np.all(np.isfinite(x)):
        raise ValueError("z must be finite (it has NaN or infinite values)")
    test, unit = _split(z, row_dims, float(test_size), int(seed))

    names = list(matrices)
    r2 = np.full((len(factors), len(names)), np.nan)
    n_train = np.zeros(len(names), dtype=np.int64)
    n_test = np.zeros(len(names), dtype=np.int64)
    for k, name in enumerate(names):
        y = matrices[name]
        ok = np.all(np.isfinite(y), axis=1)
        tr, te = ok & ~test, ok & test
        n_train[k], n_test[k] = int(tr.sum()), int(te.sum())
        if n_train[k] == 0 or n_test[k] == 0:
            continue
        for i, factor in enumerate(factors):
            cols = per_dim == factor
            if not np.any(cols):
                continue
            r2[i, k] = _r2(x[tr][:, cols], y[tr], x[te][:, cols], y[te])

    sizes = np.asarray([int(np.sum(per_dim == f)) for f in factors], dtype=np.int64)
    attrs = provenance(
        "function",
        "flows.disentanglement",
        test_size=float(test_size),
        seed=int(seed),
        n_train=int(np.sum(~test)),
        n_test=int(np.sum(test)),
        split=unit,
        method=(
            "ordinary least squares with intercept (numpy lstsq) from each factor block to "
            f"each target on the train rows; R² on held-out rows (split by {unit})"
        ),
        formula=(
            "R2 = 1 - sum_test sum_c (t - t_hat)^2 / sum_test sum_c (t - mean_test t)^2 "
            "(variance-weighted over columns)"
        ),
        reference=_REFERENCE,
    )
    return xr.DataArray(
        r2,
        dims=("factor", "target"),
        coords={
            "factor": np.asarray(factors, dtype=str),
            "target": np.asarray(names, dtype=str),
            "dimensions": ("factor", sizes),
            "n_train": ("target", n_train),
            "n_test": ("target", n_test),
        },
        name="r2",
        attrs=attrs,
    )
