"""A tour of tmx.transforms on the embedded digits data set.

Run: .venv/bin/python examples/transforms_tour.py
"""

import numpy as np
from sklearn.datasets import load_digits

from tmx import transforms as T

digits = load_digits()
x = (digits.images[:16, :, :, None] / 16.0).astype(np.float32)  # (16, 8, 8, 1) NHWC

tset = T.product(T.rotation([0, 90, 180, 270]), T.translation([0, 1], [0, -1]))
print(tset)
print(tset.parameters.to_dataframe().head(8))

xt = T.apply_many(tset, x)  # (16, 8, 8, 8, 1)
print("transformed:", xt.shape)

# invert on a half-resolution "feature map": shifts are halved, rotations about the map centre
fmap = xt[:, 3, ::2, ::2, :]
back = T.invert_maps(tset, fmap, 3, input_size=8)
print("inverted feature map:", back.shape)

for name, group in T.seed_groups(8, size=8).items():
    print(f"{name:24s}", list(group.labels))
