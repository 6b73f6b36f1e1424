"""One writer per store, and what a kill -9 leaves (issue 23, item 4).

Child processes import ``tmx.store`` without the package's ``__init__`` (which imports
TensorFlow), so that each starts in about a second.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx import store as tstore
from tmx.store import StoreLockedError, save
from tmx.store import open as tmx_open

from .test_store import _expected, _files, _lazy_cube, _values

TESTS = Path(__file__).parent
TMX = TESTS.parent / "tmx"


def _lock(path: Path) -> Path:
    return path.parent / (path.name + tstore.LOCK_SUFFIX)


def _hooked_cube(hook, scale: float = 1.0, n_s: int = 12, delay: float = 0.0) -> xr.DataArray:
    """``_lazy_cube`` whose first block calls ``hook()`` (in the middle of the save)."""
    import time as _time

    cube = _lazy_cube(n_s=n_s)

    def block(block_info=None):
        (s0, s1), (t0, t1), (u0, u1) = block_info[None]["array-location"]
        if tuple(block_info[None]["chunk-location"]) == (0, 0, 0) and hook is not None:
            hook()
        _time.sleep(delay)
        return (_values(s0, s1, t0, t1, u0, u1) * scale).astype(np.float32)

    data = da.map_blocks(block, chunks=cube.chunks, dtype=np.float32, meta=np.array((), np.float32))
    return cube.copy(data=data)


# --------------------------------------------------------------------------------------------
# the lock, in one process


def test_the_lock_is_held_during_a_save_and_names_its_holder(tmp_path):
    path = tmp_path / "c.zarr"
    seen = {}

    def inside():
        seen.update(json.loads(_lock(path).read_text()))

    save(_hooked_cube(inside), path)
    assert seen["host"] == socket.gethostname() and seen["pid"] == os.getpid()
    assert seen["started"] and seen["token"]
    assert not _lock(path).exists()  # released
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))


@pytest.mark.parametrize(
    "kwargs", [{}, {"overwrite": True}, {"resume": True}, {"overwrite": True, "break_lock": True}]
)
def test_a_second_writer_during_a_save_is_refused_and_the_first_wins(tmp_path, kwargs):
    """Before the lock, a second save of another cube (or an overwrite) during a save mixed
    the two cubes or deleted the store under the first writer, which reported success."""
    path = tmp_path / "c.zarr"
    errors = []

    def second_writer():
        try:
            save(_hooked_cube(None, scale=2.0), path, **kwargs)
        except StoreLockedError as err:
            errors.append(err)

    save(_hooked_cube(second_writer), path)
    assert len(errors) == 1
    err = errors[0]
    assert isinstance(err, FileExistsError)
    assert f"pid {os.getpid()}" in str(err) and str(_lock(path)) in str(err)
    assert not err.stale and err.holder["pid"] == os.getpid()
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))
    assert tmx.verify(path) == 6


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_a_stale_lock_is_reported_never_broken_silently(tmp_path):
    path = tmp_path / "c.zarr"
    stale = {"host": socket.gethostname(), "pid": _dead_pid(), "started": "2026-01-01T00:00:00"}
    _lock(path).write_text(json.dumps(stale))
    for kwargs in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(StoreLockedError, match="no longer running") as err:
            save(_lazy_cube(), path, **kwargs)
        assert err.value.stale and str(_lock(path)) in str(err.value)
        assert "break_lock=True" in str(err.value)
    assert _lock(path).exists()
    save(_lazy_cube(), path, break_lock=True)
    assert not _lock(path).exists()
    assert tmx.verify(path) == 6


def test_break_lock_never_breaks_the_lock_of_a_running_process(tmp_path):
    path = tmp_path / "c.zarr"
    alive = {"host": socket.gethostname(), "pid": os.getppid(), "started": "then"}
    _lock(path).write_text(json.dumps(alive))
    with pytest.raises(StoreLockedError, match="being written by another save"):
        save(_lazy_cube(), path, break_lock=True)
    assert json.loads(_lock(path).read_text()) == alive
    # another host: cannot be checked, so reported; break_lock=True is the user's call
    _lock(path).write_text(json.dumps({**alive, "host": "elsewhere"}))
    with pytest.raises(StoreLockedError, match="cannot check"):
        save(_lazy_cube(), path)
    save(_lazy_cube(), path, break_lock=True)
    # an empty lock file (killed while taking it) is reported too
    _lock(path).write_text("")
    with pytest.raises(StoreLockedError, match="no readable owner"):
        save(_lazy_cube(), path, overwrite=True)


@pytest.mark.parametrize("kwargs", [{}, {"resume": True}, {"overwrite": True}])
def test_a_directory_left_by_a_kill_during_the_first_metadata_write_is_empty(tmp_path, kwargs):
    path = tmp_path / "c.zarr"
    path.mkdir()
    (path / f"zarr.{'ab' * 16}.partial").write_text('{"zarr_format": 3, "node')
    save(_lazy_cube(), path, **kwargs)
    assert not list(path.glob("*.partial"))
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))
    # a half-written zarr.json alone counts as empty too; anything else is never deleted
    other = tmp_path / "other"
    other.mkdir()
    (other / "zarr.json").write_text('{"zarr_form')
    save(_lazy_cube(), other, **kwargs)
    assert tmx.verify(other) == 6
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / f"zarr.{'cd' * 16}.partial").write_text("")
    (mine / "notes.txt").write_text("keep")
    with pytest.raises((ValueError, FileExistsError), match="not a tmx cube"):
        save(_lazy_cube(), mine, **kwargs)
    assert (mine / "notes.txt").read_text() == "keep"


# --------------------------------------------------------------------------------------------
# processes

_CHILD = """
import os, sys, time, types
pkg = types.ModuleType("tmx"); pkg.__path__ = [{tmx!r}]; sys.modules["tmx"] = pkg
sys.path.insert(0, {root!r})
import tests.test_store_concurrency as c
from tmx.store import StoreLockedError, save

cube = c._hooked_cube(None, scale={scale}, n_s={n_s}, delay={delay})
print("waiting", flush=True)
while not os.path.exists({go!r}):
    time.sleep(0.002)
print("ready", flush=True)
try:
    save(cube, {path!r}, **{kwargs!r})
except StoreLockedError as err:
    print("LOCKED", err, flush=True)
    sys.exit(3)
except FileExistsError as err:
    print("EXISTS", err, flush=True)
    sys.exit(4)
print("saved", flush=True)
"""


def _child(
    tmp_path: Path, name: str, path: Path, go: Path, *, scale=1.0, n_s=12, delay=0.05, **kwargs
) -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(
        _CHILD.format(
            tmx=str(TMX),
            root=str(TESTS.parent),
            scale=scale,
            n_s=n_s,
            delay=delay,
            go=str(go),
            path=str(path),
            kwargs=kwargs,
        )
    )
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_processes_writing_one_path(tmp_path):
    """Two processes started together: a save of one cube and an overwrite with another.
    Before the lock both could succeed, leaving the manifest of one cube with the values of
    the other, or the store deleted under the first writer."""
    path, go = tmp_path / "c.zarr", tmp_path / "go"
    procs = [
        _child(tmp_path, "a", path, go, scale=1.0),
        _child(tmp_path, "b", path, go, scale=2.0, overwrite=True),
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "waiting"
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 3], outs  # one saved, the other was refused by the lock
    out = outs[codes.index(3)][0]
    assert "LOCKED" in out and "pid" in out and "tmx-lock" in out
    winner = [1.0, 2.0][codes.index(0)]
    values = tmx_open(path).values
    np.testing.assert_array_equal(values, _expected(_lazy_cube()).values * np.float32(winner))
    assert tmx.verify(path) == 6
    assert not _lock(path).exists()


_KILLED = """
import os, sys, types
pkg = types.ModuleType("tmx"); pkg.__path__ = [{tmx!r}]; sys.modules["tmx"] = pkg
sys.path.insert(0, {root!r})
import tests.test_store_concurrency as c
from tmx.store import save
cube = c._slow_cube()
print("ready", flush=True)
save(cube, {path!r}, resume=True, break_lock=True)
print("saved", flush=True)
"""


def _slow_cube() -> xr.DataArray:
    return _hooked_cube(None, n_s=40, delay=0.02)  # 20 chunks of 4 x 5 x 30


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """A save killed with SIGKILL at random moments (the first metadata write, the chunks,
    the end), resumed each time, ends bit-identical to an uninterrupted save: every file
    of the store, values, records and metadata alike."""
    path = tmp_path / "c.zarr"
    script = tmp_path / "killed.py"
    script.write_text(_KILLED.format(tmx=str(TMX), root=str(TESTS.parent), path=str(path)))
    rng = random.Random(23)
    killed = 0
    for moment in [rng.uniform(0.0, 0.05), rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.3)]:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        killed += proc.returncode == -signal.SIGKILL
        try:  # never a complete-looking partial store
            opened = tmx_open(path)
        except (ValueError, FileNotFoundError):
            continue
        np.testing.assert_array_equal(opened.values, _expected(_slow_cube()).values)
    assert killed >= 1
    save(_slow_cube(), path, resume=True, break_lock=True)
    save(_slow_cube(), tmp_path / "clean.zarr")
    assert _files(path) == _files(tmp_path / "clean.zarr")
    assert tmx.verify(path) == 20
    np.testing.assert_array_equal(tmx_open(path).values, _expected(_slow_cube()).values)
