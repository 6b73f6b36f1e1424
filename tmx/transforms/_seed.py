"""The seven transformation groups of the seed package's MNIST transformation data set.

``transformational_measures_tf`` (0.72a0, ``MnistTransformationsDataSet.set_transformation_group``)
evaluates a model under seven groups of n transformations each. Its definitions, read from its
source, with the defects this module corrects:

==========================  ===================================================================
group                       seed definition (W = H = 28)
==========================  ===================================================================
identity                    n identities
rotation                    angles i · int(360 / n), i < n (truncated step: n = 7 covers 306°)
translation_x               "tx" = i · step, step = int(W / n) if n ≤ W else 1
translation_y               "ty" = i · step
translation_xy              ceil(n/2) "ty" shifts, then floor(n/2) "tx" shifts (a union)
rotation_translation_x      ceil(n/2) rotations, then floor(n/2) shifts — of "ty" in the seed
rotation_translation_y      ceil(n/2) rotations, then floor(n/2) "tx" shifts
==========================  ===================================================================

The seed used Keras' ``apply_affine_transform``, whose ``tx``/``ty`` move content by −tx in x and
−ty in y, filled with ``"nearest"``; its README and its code also disagree on which of the last two
groups translates along x. ``semantics="tmx"`` (default) gives what the group names say: exact
angles 360 · i / n, positive shifts along the named axis (content moves right/down by i · step
pixels), constant zero fill. ``semantics="seed"`` reproduces the transformations the seed
actually applied, group by group in its order, so old numbers can be reproduced.
"""

from __future__ import annotations

from typing import Literal

from .. import _validate as v
from ._set import Fill, TransformationSet, identity, rotation, translation, union

GROUP_NAMES = (
    "identity",
    "rotation",
    "translation_x",
    "translation_y",
    "translation_xy",
    "rotation_translation_x",
    "rotation_translation_y",
)


def seed_groups(
    n: int,
    *,
    size: int | tuple[int, int] = 28,
    semantics: Literal["tmx", "seed"] = "tmx",
    fill: Fill | None = None,
    fill_value: float = 0.0,
) -> dict[str, TransformationSet]:
    """The seven transformation groups of the seed's MNIST data set, each with n transformations.

    Parameters
    ----------
    n : int
        Transformations per group (the seed's ``n``).
    size : int or (H, W), default 28
        Input image size; translation steps are int(W / n) (int(H / n) along y), or 1 pixel when
        n exceeds the size.
    semantics : {"tmx", "seed"}, default "tmx"
        "tmx": rotations by exactly 360 · i / n degrees and shifts along the named axis, content
        moving right/down. "seed": what ``transformational_measures_tf`` 0.72a0 applied (integer
        angle steps, shifts of −i · step, the swapped axes of its sixth and seventh groups, and
        ``fill="nearest"``).
    fill : str, optional
        Padding mode for rotations and translations; default "constant" ("nearest" for
        ``semantics="seed"``).
    fill_value : float, default 0.0
        The value of ``fill="constant"`` (use the background of standardised images, e.g.
        −mean/std, so that rotated corners look like background).

    Returns
    -------
    dict
        Group name → TransformationSet, in the seed's order: identity, rotation, translation_x,
        translation_y, translation_xy, rotation_translation_x, rotation_translation_y.

    Examples
    --------
    >>> import tmx
    >>> groups = tmx.transforms.seed_groups(4, size=28)
    >>> list(groups) == list(tmx.transforms.GROUP_NAMES)
    True
    >>> groups["rotation"].parameters["angle"].values.tolist()
    [0.0, 90.0, 180.0, 270.0]
    >>> groups["translation_xy"].labels
    ('translation(0, 0)', 'translation(0, 14)', 'translation(0, 0)', 'translation(14, 0)')
    >>> tmx.transforms.seed_groups(7, semantics="seed")["rotation"].parameters["angle"].values.max()
    np.float64(306.0)
    """
    n = v.positive_int(n, "n")
    height, width = v.image_size(size, "size")
    semantics = v.choice(semantics, "semantics", ("tmx", "seed"))
    seed = semantics == "seed"
    fill = fill or ("nearest" if seed else "constant")
    sign = -1.0 if seed else 1.0

    def step(extent: int, count: int) -> int:
        return extent // count if count <= extent else 1

    def rotations(count: int) -> TransformationSet:
        angles = [i * (360 // count) if seed else 360.0 * i / count for i in range(count)]
        return rotation([float(a) for a in angles], fill=fill, fill_value=fill_value)

    def shifts_x(count: int) -> TransformationSet:
        s = step(width, count)
        return translation(
            [sign * i * s for i in range(count)], 0.0, fill=fill, fill_value=fill_value
        )

    def shifts_y(count: int) -> TransformationSet:
        s = step(height, count)
        return translation(
            0.0, [sign * i * s for i in range(count)], fill=fill, fill_value=fill_value
        )

    half_up, half_down = (n + 1) // 2, n // 2

    def mixed(first: TransformationSet, second_count: int, second) -> TransformationSet:
        return first if second_count == 0 else union(first, second(second_count))

    groups = {
        "identity": identity(n),
        "rotation": rotations(n),
        "translation_x": shifts_x(n),
        "translation_y": shifts_y(n),
        "translation_xy": mixed(shifts_y(half_up), half_down, shifts_x),
        # the seed's sixth group (documented as x) shifted along y, and the seventh along x
        "rotation_translation_x": mixed(
            rotations(half_up), half_down, shifts_y if seed else shifts_x
        ),
        "rotation_translation_y": mixed(
            rotations(half_up), half_down, shifts_x if seed else shifts_y
        ),
    }
    return groups
