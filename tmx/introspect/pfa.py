"""Principal Filter Analysis (PFA) of layer responses, streamed over sample chunks.

Reference: X. Suau, L. Zappella and N. Apostoloff, "Filter distillation for network
compression", WACV 2020 (Principal Filter Analysis, PFA). The spectrum of the covariance of a
layer's channel responses tells how many channels the layer needs: a flat spectrum means all
channels carry information, a peaked spectrum means the layer is redundant.

Differences with DNIKit's implementation: eigenvectors are reordered together with the
eigenvalues, the covariance is merged over chunks with the stable (Chan) update in float64,
inactive channels are counted and never kept, and a layer with fewer samples than channels gets a
Ledoit-Wolf shrinkage covariance (with a warning) instead of being dropped. The recipes' numbers
(KL, energy, and size with its default ``size_rule="percentile"``) are DNIKit's.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import xarray as xr

from .._progress import resolve as resolve_progress
from .._progress import steps
from .._provenance import provenance
from .._schema import as_responses, unit_index, units_by_layer
from .._validate import choice, flag, fraction
from ._common import sample_slices

log = logging.getLogger("tmx")

_POOLS = ("max", "mean", "sum")
_STRATEGIES = ("kl", "energy", "size")
_UNIT_STRATEGIES = ("l1max", "l1min", "absmax", "absmin")
_SIZE_RULES = ("percentile", "share")
_NUMPY_CHUNK = 4096


class _Layer:
    """Pooling plan and streamed moments of one layer."""

    def __init__(self, name: str, positions: np.ndarray, channel_of: np.ndarray | None) -> None:
        self.name = name
        self.positions = positions
        self.n_units = positions.size
        self.index = unit_index(positions)
        self.grid = None  # (positions, channels) when units are a full grid in (y, x, c) order
        if channel_of is None:  # dense: every unit is a channel
            self.order = None
            self.channels = np.arange(positions.size)
        else:
            self.order = np.argsort(channel_of, kind="stable")
            self.channels, self.starts, self.counts = np.unique(
                channel_of[self.order], return_index=True, return_counts=True
            )
            c = self.channels.size
            if positions.size % c == 0 and np.array_equal(
                channel_of, np.tile(self.channels, positions.size // c)
            ):
                self.grid = (positions.size // c, c)
        p = self.channels.size
        self.n = 0
        self.mean = np.zeros(p)
        self.m2 = np.zeros((p, p))
        self.fourth = 0.0  # sum_i ||x_i - mean||^4, second pass, shrinkage only

    def pool(self, block: np.ndarray, pool: str) -> np.ndarray:
        """The chunk's channel responses: float32 stays float32, anything else is float64;
        spatial sums and means are accumulated in float64."""
        x = block[:, self.index]
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if self.order is None:
            return x
        if self.grid is not None:  # units in (y, x, c) order: pool over a reshaped view
            g = x.reshape(x.shape[0], *self.grid)
            if pool == "max":
                return g.max(axis=1)
            s = g.sum(axis=1, dtype=np.float64)
            return s / self.grid[0] if pool == "mean" else s
        x = x[:, self.order]
        if pool == "max":
            return np.maximum.reduceat(x, self.starts, axis=1)
        s = np.add.reduceat(x, self.starts, axis=1, dtype=np.float64)
        return s / self.counts if pool == "mean" else s

    def update(self, x: np.ndarray, gram: str) -> None:
        """Merge a chunk's (count, mean, centred cross-products): the multivariate Chan update.

        The chunk is centred on its float64 mean (rounded to the chunk's dtype, then the
        residual mean is removed exactly), and its cross-products are computed in the chunk's
        dtype (``gram="input"``) or in float64; the merge is always float64."""
        nb = x.shape[0]
        if nb == 0:
            return
        if gram == "float64" or x.dtype == np.float64:
            x = np.asarray(x, dtype=np.float64)
            mb = x.mean(axis=0)
            xc = x - mb
            cb = xc.T @ xc
        else:
            m = x.mean(axis=0, dtype=np.float64).astype(x.dtype)
            xc = x - m
            mc = xc.mean(axis=0, dtype=np.float64)
            cb = (xc.T @ xc).astype(np.float64) - nb * np.outer(mc, mc)
            mb = m.astype(np.float64) + mc
        na = self.n
        n = na + nb
        delta = mb - self.mean
        self.m2 += cb + np.outer(delta, delta) * (na * nb / n)
        self.mean += delta * (nb / n)
        self.n = n


def _blocks(data: Any, bar: Any = None) -> Any:
    """Yield (sample-chunk) numpy blocks with every unit, computing dask chunks one at a time
    (``bar`` advanced after each)."""
    for sl in sample_slices(data, _NUMPY_CHUNK):
        block = data[sl]
        yield np.asarray(block.compute() if hasattr(block, "compute") else block)
        if bar is not None:
            bar.advance()


def _ledoit_wolf(cov: np.ndarray, n: int, fourth: float) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrinkage towards ``mu * I`` from streamed moments.

    ``cov`` is the ddof=1 covariance and ``fourth`` = sum_i ||x_i - mean||^4; the shrinkage
    intensity is the Ledoit-Wolf (2004) estimate computed as in scikit-learn's
    ``ledoit_wolf_shrinkage`` (on the ddof=0 moments) and applied to the ddof=1 covariance.
    """
    p = cov.shape[0]
    s0 = cov * (n - 1) / n
    mu = np.trace(s0) / p
    delta_ = np.sum(s0**2)
    beta = (fourth / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * np.trace(s0) + p * mu**2) / p
    beta = min(beta, delta)
    shrink = 0.0 if beta <= 0 or delta == 0 else float(beta / delta)
    mu1 = np.trace(cov) / p
    return (1 - shrink) * cov + shrink * mu1 * np.eye(p), shrink


def pfa(
    responses: Any,
    *,
    pool: str = "max",
    transformation: Any = None,
    epsilon_inactive: float = 1e-8,
    gram: str = "input",
    eigenvectors: bool = True,
    progress: bool | None = None,
) -> xr.Dataset:
    """Per-layer channel covariance spectra for Principal Filter Analysis.

    Per layer, with x the (pooled) channel responses of a sample, the covariance
    Σ = 1/(n − 1) Σ_i (x_i − x̄)(x_i − x̄)ᵀ is accumulated over sample chunks (Chan's merge,
    float64) and decomposed, Σ = V diag(λ) Vᵀ, λ sorted descending (Suau et al. 2020).

    Parameters
    ----------
    responses
        A cube (sample, transformation, unit) or a (sample, unit) DataArray with a ``layer``
        coordinate (see ``tmx.introspect.as_responses``); numpy or dask backed. Dask data is
        streamed one sample chunk at a time (all units of a chunk are loaded together).
    pool
        Spatial pooling of conv layers (layers whose units have ``y >= 0``): ``"max"``,
        ``"mean"`` or ``"sum"`` over the (y, x) units of each channel. Dense layers use their
        units as channels.
    transformation
        Passed to ``as_responses``.
    epsilon_inactive
        A channel whose variance is ``<= epsilon_inactive`` is inactive.
    gram
        Precision of each chunk's centred cross-products ``Xcᵀ Xc``: ``"input"`` (default)
        computes them in the responses' dtype (float32 for a tmx cube: twice as fast, relative
        error about 1e-6 on the covariance, below the float32 data's own rounding), and
        ``"float64"`` in float64 (about 1e-12). Chunk means and the merge over chunks are
        float64 either way, and float64 responses always use float64.
    eigenvectors
        Also compute the eigenvectors (``np.linalg.eigh``); ``False`` computes eigenvalues only
        (``np.linalg.eigvalsh``, about 2.5× faster on 512 channels), which is all
        ``pfa_recipe`` needs, and leaves out the ``eigenvectors`` variable.
    progress
        A progress bar over the sample chunks read (a second pass for shrunk layers); None
        (default): when run interactively (a terminal, not under pytest or CI).

    Returns
    -------
    xr.Dataset
        Dims ``layer``, ``component``, ``channel``, ``channel_a``, ``channel_b`` (padded with NaN
        to the widest layer). Variables: ``eigenvalues`` (layer, component), sorted descending;
        ``eigenvectors`` (layer, channel, component), column k belongs to eigenvalue k;
        ``covariance`` (layer, channel_a, channel_b), ddof=1 (shrunk where n < channels);
        ``mean`` and ``variance`` (layer, channel); ``channel_id`` (layer, channel), the
        ``channel`` coordinate of conv channels or the unit index in a dense layer (-1 pads);
        ``n_units``, ``n_channels``, ``n_active``, ``shrinkage`` (layer) and ``n_samples``.
        Attributes: ``introspector`` ("pfa"), ``pool``, ``epsilon``, ``gram``,
        ``eigenvectors`` (0/1), ``dtype``, ``method`` (the method's description) and
        ``tmx_version``.
        **Computes**: an eigendecomposition needs the whole covariance, so the result is in
        memory; dask-backed responses are read one sample chunk at a time (same numbers as
        numpy-backed ones chunked alike).

    References
    ----------
    Suau, Zappella & Apostoloff (2020), "Filter distillation for network compression", WACV.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [3.0, 6.0, 0.0], [4.0, 8.0, 0.0]])
    >>> responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", ["h"] * 3)})
    >>> stats = introspect.pfa(responses)
    >>> stats["eigenvalues"].sel(layer="h").values.round(6) + 0.0  # one direction carries all
    array([8.333333, 0.      , 0.      ])
    >>> int(stats["n_active"].sel(layer="h"))
    2
    """
    choice(pool, "pool", _POOLS)
    eigenvectors = flag(eigenvectors, "eigenvectors")
    if gram not in ("input", "float64"):
        raise ValueError(f'gram must be "input" or "float64"; got {gram!r}')
    if not epsilon_inactive >= 0:
        raise ValueError(f"epsilon_inactive must be >= 0; got {epsilon_inactive!r}")
    show = resolve_progress(progress)
    r = as_responses(responses, transformation=transformation)
    coords = r.coords
    layers: list[_Layer] = []
    for name, pos in units_by_layer(r).items():
        channel_of = None
        if "y" in coords and "channel" in coords:
            y = np.asarray(coords["y"].values)[pos]
            if np.any(y >= 0):
                channel_of = np.asarray(coords["channel"].values)[pos]
        layers.append(_Layer(name, pos, channel_of))
    data = r.data
    chunks = len(sample_slices(data, _NUMPY_CHUNK))
    log.info("pfa: %d layer(s), %d sample chunk(s)", len(layers), chunks)
    with steps(chunks, show, unit="chunk") as bar:
        for block in _blocks(data, bar):
            for lay in layers:
                lay.update(lay.pool(block, pool), gram)
    n = layers[0].n if layers else 0
    if n < 2:
        raise ValueError(f"pfa needs at least 2 samples; got {n}")
    small = [lay for lay in layers if n < lay.channels.size]
    if small:
        warnings.warn(
            f"fewer samples ({n}) than channels in layer(s) {[s.name for s in small]}: using a "
            "Ledoit-Wolf shrinkage covariance",
            stacklevel=2,
        )
        log.info("pfa: a second pass for the shrinkage of %d layer(s)", len(small))
        with steps(chunks, show, unit="chunk") as bar:
            for block in _blocks(data, bar):
                for lay in small:
                    xc = np.asarray(lay.pool(block, pool), dtype=np.float64) - lay.mean
                    lay.fourth += float(np.sum(np.sum(xc**2, axis=1) ** 2))
    width = max(lay.channels.size for lay in layers)
    nl = len(layers)
    eigval = np.full((nl, width), np.nan)
    eigvec = np.full((nl, width, width) if eigenvectors else (0, 0, 0), np.nan)
    cov_all = np.full((nl, width, width), np.nan)
    mean_all = np.full((nl, width), np.nan)
    var_all = np.full((nl, width), np.nan)
    chan_id = np.full((nl, width), -1, dtype=np.int64)
    n_active = np.zeros(nl, dtype=np.int64)
    shrink_all = np.zeros(nl)
    for i, lay in enumerate(layers):
        p = lay.channels.size
        cov = lay.m2 / (n - 1)
        var = np.diag(cov).copy()
        if lay in small:
            cov, shrink_all[i] = _ledoit_wolf(cov, n, lay.fourth)
        if eigenvectors:
            w, v = np.linalg.eigh(cov)
        else:
            w, v = np.linalg.eigvalsh(cov), None
        idx = np.argsort(w, kind="stable")[::-1]
        eigval[i, :p] = w[idx]
        if v is not None:
            eigvec[i, :p, :p] = v[:, idx]
        cov_all[i, :p, :p] = cov
        mean_all[i, :p] = lay.mean
        var_all[i, :p] = var
        chan_id[i, :p] = lay.channels
        n_active[i] = int(np.sum(var > epsilon_inactive))
    names = [lay.name for lay in layers]
    variables = {
        "eigenvalues": (("layer", "component"), eigval),
        "eigenvectors": (("layer", "channel", "component"), eigvec),
    }
    if not eigenvectors:
        del variables["eigenvectors"]
    return xr.Dataset(
        {
            **variables,
            "covariance": (("layer", "channel_a", "channel_b"), cov_all),
            "mean": (("layer", "channel"), mean_all),
            "variance": (("layer", "channel"), var_all),
            "channel_id": (("layer", "channel"), chan_id),
            "n_units": ("layer", np.array([lay.n_units for lay in layers])),
            "n_channels": ("layer", np.array([lay.channels.size for lay in layers])),
            "n_active": ("layer", n_active),
            "shrinkage": ("layer", shrink_all),
            "n_samples": n,
        },
        coords={"layer": names},
        attrs=provenance(
            "introspector",
            "pfa",
            pool=pool,
            epsilon=float(epsilon_inactive),
            gram=gram,
            eigenvectors=eigenvectors,
            dtype=str(np.dtype(data.dtype)),
            method="PFA (Suau, Zappella & Apostoloff 2020): channel covariance spectrum, "
            "streamed Chan merge in float64, ddof=1",
        ),
    )


def _kl(eig: np.ndarray) -> float:
    """KL divergence of the normalised spectrum against the uniform distribution."""
    lam = np.clip(eig, 0, None)
    total = lam.sum()
    if total <= 0:
        return float(np.log(lam.size)) if lam.size > 1 else 0.0
    p = lam / total
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] * lam.size)))


def _energy_count(lam: np.ndarray, threshold: float) -> int:
    """The smallest k with Σ_{j≤k} λ_j / Σλ >= threshold (λ sorted descending, >= 0); all of
    them when Σλ = 0."""
    tot = lam.sum()
    if tot <= 0:
        return int(lam.size)
    return min(int(np.searchsorted(np.cumsum(lam) / tot, threshold) + 1), int(lam.size))


def _size_percentile_threshold(eigs: list[np.ndarray], size: float, epsilon: float) -> float:
    """DNIKit's Size rule: one energy fraction for all layers.

    Per layer, with λ sorted descending and clipped at 0, the exclusive cumulative energy of
    rank k is E_k = Σ_{j<k} λ_j / Σλ (E_1 = 0; every E_k = 1 for a layer with Σλ = 0). The
    threshold is the ``100 · size``-th percentile (linear interpolation) of the E_k of all
    channels of all layers, clamped to [ε, 1 − ε].
    """
    exclusive = []
    for e in eigs:
        lam = np.clip(e, 0, None)
        cum = np.cumsum(lam)
        if cum.size and cum[-1] > 0:
            exclusive.append(np.concatenate(([0.0], cum[:-1])) / cum[-1])
        else:
            exclusive.append(np.ones_like(lam))
    values = np.concatenate(exclusive) if exclusive else np.zeros(1)
    t = float(np.percentile(values, 100.0 * float(size)))
    return min(max(t, float(epsilon)), 1.0 - float(epsilon))


def _pair_pick(sub: np.ndarray, largest: bool) -> int:
    """absmax / absmin: the pair with the extreme |correlation|, then the one of the two whose
    own next extreme |correlation| (with any other unit) is more extreme; ties: lower index."""
    sub = sub.copy()
    np.fill_diagonal(sub, np.nan)
    ext = np.nanmax if largest else np.nanmin
    value = ext(sub)
    rows, cols = np.nonzero(np.isclose(sub, value, rtol=1e-12, atol=0.0))
    a, b = sorted((int(rows[0]), int(cols[0])))
    if sub.shape[0] == 2:
        return a
    sub[a, b] = sub[b, a] = np.nan
    other_a, other_b = ext(sub[a]), ext(sub[b])
    if other_a == other_b:
        return a
    return b if (other_b > other_a) == largest else a


def _removal_order(cov: np.ndarray, active: np.ndarray, strategy: str) -> np.ndarray:
    """Channel indices in removal order: inactive channels first, then by ``strategy``."""
    p = cov.shape[0]
    inactive = [int(c) for c in np.flatnonzero(~active)]
    act = np.flatnonzero(active)
    sd = np.sqrt(np.diag(cov)[act])
    corr = np.abs(cov[np.ix_(act, act)] / np.outer(sd, sd)) if act.size else np.zeros((0, 0))
    np.fill_diagonal(corr, 0.0)
    alive = np.ones(act.size, dtype=bool)
    l1 = corr.sum(axis=1)
    order: list[int] = []
    for _ in range(act.size):
        cand = np.flatnonzero(alive)
        if cand.size == 1:
            pick = int(cand[0])
        elif strategy in ("l1max", "l1min"):
            vals = l1[cand]
            best = vals.max() if strategy == "l1max" else vals.min()
            # ties (up to rounding of the running sums) go to the lower channel index
            pick = int(cand[np.flatnonzero(np.isclose(vals, best, rtol=1e-9, atol=1e-12))[0]])
        else:
            pick = int(cand[_pair_pick(corr[np.ix_(cand, cand)], strategy == "absmax")])
        order.append(pick)
        alive[pick] = False
        l1 -= corr[:, pick]
    out = inactive + [int(act[k]) for k in order]
    assert len(out) == p
    return np.asarray(out, dtype=np.int64)


def pfa_recipe(
    stats: xr.Dataset,
    strategy: str = "kl",
    *,
    energy: float = 0.98,
    min_kept: int = 1,
    size: float | None = None,
    size_rule: str = "percentile",
    epsilon_energy: float = 1e-8,
    unit_strategy: str | None = None,
) -> xr.Dataset:
    """How many (and which) channels of each layer to keep, from ``pfa`` statistics.

    Parameters
    ----------
    stats
        The Dataset returned by ``pfa``.
    strategy
        ``"kl"`` (PFA-KL): with p_k = λ_k / Σλ over the layer's n channels,
        KL = Σ p_k log(p_k n) (0 log 0 = 0) and ratio = 1 − KL / log n; keep ceil(n · ratio).
        ``"energy"`` (PFA-En): the smallest k whose cumulative spectral share is ``>= energy``,
        at least ``min_kept``. ``"size"``: a relative network size ``size`` turned into one
        count per layer by ``size_rule``. Every count is capped at the layer's active channels.
    energy
        Spectral energy share for ``"energy"``, in (0, 1].
    min_kept
        Lower bound of the count for ``"energy"`` and ``"size"`` (still capped by the actives).
    size
        Relative network size in (0, 1] for ``"size"``.
    size_rule
        How ``"size"`` chooses the counts. ``"percentile"`` (default; DNIKit's ``Size``, by the
        PFA authors' team): one energy fraction t shared by all layers, then the ``"energy"``
        rule with t in every layer. With λ_1 ≥ λ_2 ≥ … the layer's eigenvalues clipped at 0,
        its exclusive cumulative energies are E_k = Σ_{j<k} λ_j / Σ_j λ_j, k = 1 … n (E_1 = 0;
        all 1 when Σλ = 0), and t = clip(P_{100·size}({E_k of every channel of every layer}),
        ε, 1 − ε), P the percentile with linear interpolation and ε = ``epsilon_energy``; each
        layer keeps the smallest k with Σ_{j≤k} λ_j / Σλ ≥ t, at least ``min_kept``. The kept
        total is about, not exactly, ``size`` × Σ channels, and ``size=1`` keeps the channels
        up to 1 − ε of the energy. ``"share"`` (tmx's rule): one global threshold on the
        spectral shares p_k = λ_k / Σλ of the active channels of all layers, the
        round(``size`` × Σ channels) largest shares are kept (each layer at least
        ``min_kept``), so the total is exact and ``size=1`` keeps every active channel.
    epsilon_energy
        ε of ``size_rule="percentile"``: the threshold is clamped to [ε, 1 − ε] (DNIKit: 1e-8).
    unit_strategy
        Which channels to remove, DNIKit's four unit selection strategies. All work on |R|, the
        absolute Pearson correlation matrix of the layer's active channels, remove one channel
        at a time and recompute on the channels left; inactive channels are always removed
        first. ``"l1max"`` (default, ``None``): remove the channel with the largest L1 norm of
        its |R| row (the most redundant); ``"l1min"``: the smallest. ``"absmax"``: take the
        pair with the largest |R_ij| and remove the one of the two whose largest |R| with any
        other channel is larger; ``"absmin"``: the pair with the smallest |R_ij|, remove the one
        whose smallest |R| with another channel is smaller. Ties go to the lower channel index.
        On the benchmark's 512-channel layer ``"l1max"`` removes the same 146 channels as
        DNIKit's L1Max (``python -m benchmarks.introspect``).

    Returns
    -------
    xr.Dataset
        Per layer: ``original`` (channels; ``n_units`` is the unit count before pooling),
        ``recommended``, ``kl``, ``ratio``, ``kept_energy`` (fraction of Σλ in the top
        ``recommended`` eigenvalues) and ``kept_energy_abs``; ``keep`` (layer, channel), a mask
        over the layer's channels padded False; ``removal_order`` (layer, rank), channel indices
        in removal order (the last ones are the most essential), padded -1. Attributes:
        ``introspector`` ("pfa_recipe"), the options (``size`` ``"None"`` when unset),
        ``size_energy``, the shared energy fraction t of ``size_rule="percentile"`` (NaN for
        the other rules), and ``tmx_version``.

    References
    ----------
    Suau, Zappella & Apostoloff (2020), "Filter distillation for network compression", WACV.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [3.0, 6.0, 0.0], [4.0, 8.0, 0.0]])
    >>> responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", ["h"] * 3)})
    >>> recipe = introspect.pfa_recipe(introspect.pfa(responses), "energy", energy=0.9)
    >>> recipe["recommended"].values, recipe["keep"].values
    (array([1]), array([[False,  True, False]]))
    """
    choice(strategy, "strategy", _STRATEGIES)
    unit_strategy = "l1max" if unit_strategy is None else unit_strategy
    choice(unit_strategy, "unit_strategy", _UNIT_STRATEGIES)
    if strategy == "energy":
        energy = fraction(energy, "energy", high_open=False)
    if strategy == "size":
        size = fraction(size, "size (strategy='size')", high_open=False)
    choice(size_rule, "size_rule", _SIZE_RULES)
    if not 0 <= epsilon_energy < 0.5:
        raise ValueError(f"epsilon_energy must be in [0, 0.5); got {epsilon_energy!r}")
    if int(min_kept) < 0:
        raise ValueError(f"min_kept must be >= 0; got {min_kept!r}")
    n_ch = np.asarray(stats["n_channels"].values, dtype=np.int64)
    n_act = np.asarray(stats["n_active"].values, dtype=np.int64)
    nl = n_ch.size
    eigs = [np.asarray(stats["eigenvalues"].values[i, : n_ch[i]]) for i in range(nl)]
    kl = np.array([_kl(e) for e in eigs])
    logn = np.log(np.maximum(n_ch, 1))
    ratio = np.where(n_ch > 1, 1 - kl / np.where(logn > 0, logn, 1), 1.0)
    rec = np.zeros(nl, dtype=np.int64)
    size_energy = float("nan")
    if strategy == "kl":
        rec = np.array([math.ceil(n * r - 1e-9) for n, r in zip(n_ch, ratio, strict=True)])
    elif strategy == "energy":
        for i, e in enumerate(eigs):
            rec[i] = max(_energy_count(np.clip(e, 0, None), energy), int(min_kept))
    elif size_rule == "percentile":
        assert size is not None  # strategy == "size" (checked above)
        size_energy = _size_percentile_threshold(eigs, float(size), epsilon_energy)
        for i, e in enumerate(eigs):
            rec[i] = max(_energy_count(np.clip(e, 0, None), size_energy), int(min_kept))
    else:
        assert size is not None  # strategy == "size" (checked above)
        shares, owner = [], []
        for i, e in enumerate(eigs):
            lam = np.clip(e[: n_act[i]], 0, None)
            tot = lam.sum()
            shares.append(lam / tot if tot > 0 else np.zeros_like(lam))
            owner.append(np.full(lam.size, i))
        allv = np.concatenate(shares) if shares else np.zeros(0)
        allo = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
        target = round(float(size) * int(n_ch.sum()))
        top = np.argsort(-allv, kind="stable")[:target]
        rec = np.bincount(allo[top], minlength=nl).astype(np.int64)
        rec = np.maximum(rec, int(min_kept))
    rec = np.minimum(np.minimum(rec, n_ch), n_act)
    width = stats.sizes["channel"]
    keep = np.zeros((nl, width), dtype=bool)
    order_all = np.full((nl, width), -1, dtype=np.int64)
    kept_abs = np.zeros(nl)
    kept_frac = np.zeros(nl)
    active_mask = np.asarray(stats["variance"].values) > float(stats.attrs["epsilon"])
    for i in range(nl):
        p = n_ch[i]
        cov = np.asarray(stats["covariance"].values[i, :p, :p])
        order = _removal_order(cov, active_mask[i, :p], unit_strategy)
        order_all[i, :p] = order
        keep[i, order[p - rec[i] :]] = True
        lam = np.clip(eigs[i], 0, None)
        kept_abs[i] = lam[: rec[i]].sum()
        kept_frac[i] = kept_abs[i] / lam.sum() if lam.sum() > 0 else 0.0
    return xr.Dataset(
        {
            "original": ("layer", n_ch),
            "n_units": ("layer", np.asarray(stats["n_units"].values)),
            "n_active": ("layer", n_act),
            "recommended": ("layer", rec),
            "kl": ("layer", kl),
            "ratio": ("layer", ratio),
            "kept_energy": ("layer", kept_frac),
            "kept_energy_abs": ("layer", kept_abs),
            "keep": (("layer", "channel"), keep),
            "removal_order": (("layer", "rank"), order_all),
        },
        coords={"layer": stats["layer"].values},
        attrs=provenance(
            "introspector",
            "pfa_recipe",
            strategy=strategy,
            unit_strategy=unit_strategy,
            energy=float(energy),
            min_kept=int(min_kept),
            size=None if size is None else float(size),
            size_rule=size_rule,
            size_energy=size_energy,
        ),
    )


__all__ = ["pfa", "pfa_recipe"]
