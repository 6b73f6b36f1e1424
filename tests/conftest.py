"""Shared test configuration: quiet TensorFlow, deterministic hypothesis profile."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from hypothesis import settings

settings.register_profile("tmx", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("tmx")
