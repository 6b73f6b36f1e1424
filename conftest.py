"""Configuration for every test run from the repository root, the docstring examples in
``tmx/`` included (``--doctest-modules``): quiet TensorFlow on the CPU, a headless matplotlib
backend, and ``tmx/__main__.py`` (which runs the command line) left out of collection."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")

collect_ignore = ["tmx/__main__.py"]
# scripts that regenerate reference data with the peers installed (see each file)
collect_ignore_glob = ["tests/data/*"]
