"""The project's main job, run by ``make demo``.

Until the analysis issue lands, the demo shows what exists: the transformation sets on the
embedded digits data set (scikit-learn's ``load_digits``).
"""

from __future__ import annotations

import numpy as np


def main() -> None:
    from sklearn.datasets import load_digits

    import tmx

    digits = load_digits()
    x = (digits.images[:4, :, :, None] / 16.0).astype(np.float32)
    print(f"tmx {tmx.__version__}: demo (placeholder until the cube and measures land)")
    print(f"digits: {digits.images.shape[0]} images of {digits.images.shape[1:]} pixels")
    for name, tset in tmx.transforms.seed_groups(4, size=x.shape[1:3]).items():
        out = tmx.transforms.apply_many(tset, x)
        print(f"  {name:24s} T={len(tset):2d}  output {out.shape}  {list(tset.labels)}")
    print("The measures, the cube and the plots arrive with the next issues.")


if __name__ == "__main__":
    main()
