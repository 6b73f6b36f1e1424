"""What long runs report on ``logging.getLogger("tmx")``, and that they print nothing."""

from __future__ import annotations

import logging

import dask.array as da
import keras
import numpy as np
import pytest
import zarr

import tmx
from tmx import store as tstore
from tmx import transforms as T


def _messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tmx" and r.levelno == level]


def _tiny_model() -> keras.Model:
    inp = keras.Input((4, 4, 1))
    h = keras.layers.Flatten(name="flat")(inp)
    out = keras.layers.Dense(3, name="logits")(h)
    return keras.Model(inp, out, name="tiny")


def _x(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).random((n, 4, 4, 1)).astype(np.float32)


def test_activations_logs_its_plan_and_each_forward_block(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _tiny_model()
    with caplog.at_level(logging.DEBUG, logger="tmx"):
        cube = tmx.activations(
            model,
            _x(6),
            T.rot90([0, 1, 2]),
            layers=["flat", "logits"],
            chunks={"sample": 2, "transformation": 2},
            memory="64MB",
            progress=False,
        )
        info = _messages(caplog)
        assert _messages(caplog, logging.DEBUG) == []  # nothing runs while it is built
        cube.compute()
    runner = tmx.cube.forward_runner(cube)
    blocks = cube.data.numblocks[0] * cube.data.numblocks[1]  # one forward pass per block
    assert blocks == 3 * 2
    plan = [m for m in info if m.startswith("activations:")]
    assert len(plan) == 1
    # 16 flat + 3 logits units, and the chunks and budget as given
    assert "6 sample(s) x 3 transformation(s) x 19 unit(s) from 2 layer(s)" in plan[0]
    assert "chunks (sample 2, transformation 2, unit 19)" in plan[0]
    assert f"batch {cube.attrs['batch_size']} images" in plan[0]
    assert "memory budget 61.04 MiB" in plan[0]  # 64e6 bytes
    assert plan[0].endswith(f"; {blocks} forward block(s)")
    debug = [m for m in _messages(caplog, logging.DEBUG) if "forward block" in m]
    assert len(debug) == blocks == runner.blocks
    starts = sorted(int(m.rsplit(" ", 1)[1]) for m in debug)
    assert starts == [0, 0, 2, 2, 4, 4]  # each sample block, once per transformation block
    assert capsys.readouterr().out == ""


def test_activations_warns_nothing_when_all_is_well(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tmx"):
        tmx.activations(_tiny_model(), _x(3), progress=False).compute()
    assert [r for r in caplog.records if r.name == "tmx"] == []


def _cube(fail: list[bool] | None = None):
    """A lazy (4, 3, 2) cube in two sample chunks; the second fails while ``fail[0]``."""
    values = np.arange(24, dtype=np.float32).reshape(4, 3, 2)

    def block(b: np.ndarray, block_info=None) -> np.ndarray:
        if fail is not None and fail[0] and block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("forward pass failed")
        return b

    data = da.from_array(values, chunks=(2, 3, 2)).map_blocks(block, dtype=np.float32)
    return tmx.from_array({"dense": data})


def test_save_open_verify_log_what_they_do(
    tmp_path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.zarr"
    fail = [True]
    with caplog.at_level(logging.INFO, logger="tmx"):
        with pytest.raises(RuntimeError, match="forward pass failed"):
            tmx.save(_cube(fail), path, progress=False)
        assert _messages(caplog) == [f"save: new store {path} (format 2): 2 chunk(s) to write"]
        caplog.clear()

        done = np.asarray(zarr.open_array(str(path / tstore.DONE_NAME), mode="r")[...])
        left = int((~done).sum())
        assert done.size == 2 and left >= 1  # the failing chunk at least

        fail[0] = False
        tmx.save(_cube(fail), path, resume=True, progress=False)
        assert _messages(caplog) == [
            f"save: resuming the store {path}: {left} of 2 chunk(s) left to write",
            f"save: wrote {left} chunk(s); the store {path} is complete",
        ]
        caplog.clear()

        tmx.save(_cube(), path, resume=True, progress=False)
        assert _messages(caplog) == [
            f"save: the store {path} is already complete; nothing to resume"
        ]
        caplog.clear()

        more = tmx.from_array({"dense": np.ones((3, 3, 2), np.float32)}, sample=range(4, 7))
        tmx.save(more, path, append=True, progress=False)
        # 3 samples onto 4 in chunks of 2: sample blocks 2 and 3, the first partial
        assert _messages(caplog) == [
            f"append: 3 sample(s) to the store {path} (4 -> 7): 2 chunk(s) to write",
            f"append: wrote 2 chunk(s); the store {path} is complete",
        ]
        caplog.clear()

        tmx.save(_cube(), path, overwrite=True, progress=False)
        assert _messages(caplog) == [
            f"save: overwriting the store {path}",
            f"save: new store {path} (format 2): 2 chunk(s) to write",
            f"save: wrote 2 chunk(s); the store {path} is complete",
        ]
        caplog.clear()

        opened = tmx.open(path)
        assert _messages(caplog) == [
            f"open: the store {path} passed its checks (format 2, shape (4, 3, 2), "
            "2 chunk(s), records present)"
        ]
        caplog.clear()
        np.testing.assert_array_equal(opened.values, np.arange(24).reshape(4, 3, 2))

        assert tmx.verify(path) == 2
        assert _messages(caplog) == [f"verify: the store {path} is sound: 2 chunk(s) checked"]
    assert capsys.readouterr().out == ""


def test_bootstrap_logs_method_n_and_passes(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    t, u = 4, 200
    cube = tmx.from_array({"dense": np.random.default_rng(0).random((8, t, u)).astype(np.float32)})
    # per replicate: S1, S2 over (T, U) and their dispersions, TV/SV/NV per unit in float64,
    # plus (2 * itemsize + 3) bytes of zero-state per (T, U): 40 800 bytes, 25 in 1 MiB
    per_pass = 2**20 // (8 * (4 * t * u + 4 * u) + (2 * 4 + 3) * t * u)
    assert per_pass == 25
    with caplog.at_level(logging.INFO, logger="tmx"):
        out = tmx.bootstrap(
            tmx.normalized_variance, cube, n=49, method="bc", memory=2**20, progress=False
        )
        vectorised = _messages(caplog)
        caplog.clear()
        tmx.bootstrap(tmx.normalized_variance, cube, progress=False)  # the jackknife
        jackknife = _messages(caplog)
    assert out.attrs["passes"] == 2  # 50 replicates, 25 a pass
    assert vectorised == [
        "bootstrap(normalized_variance): method 'bc', n=49 over ['sample', 'transformation'], "
        "vectorised path",
        "bootstrap: 50 replicate(s) (the estimate and 49 draws) in 2 pass(es) over the cube, "
        f"25 per pass within memory={2**20} bytes",
    ]
    assert jackknife == [
        "bootstrap(normalized_variance): method 'jackknife' over 8 sample(s), one pass over "
        "the cube"
    ]
    assert capsys.readouterr().out == ""


def test_analyze_and_evaluate_log_instead_of_printing(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _tiny_model()
    x, y = _x(6), np.array([0, 1, 2, 0, 1, 2])
    groups = {"rotation": T.rot90([0, 1]), "flip": T.flip(["none", "x", "y"])}
    with caplog.at_level(logging.INFO, logger="tmx"):
        tmx.analyze(model, x, y, groups, layers=["flat"], progress=True)
        analyzed = [m for m in _messages(caplog) if m.startswith("analyze:")]
        caplog.clear()
        tmx.evaluate(model, x, y, groups["flip"])
        evaluated = [m for m in _messages(caplog) if m.startswith("evaluate:")]
    assert analyzed == [
        "analyze: group 'rotation' (1 of 2, 2 transformation(s))",
        "analyze: group 'flip' (2 of 2, 3 transformation(s))",
    ]
    assert evaluated == [
        "evaluate: output 'logits' over 6 sample(s) x 3 transformation(s); "
        "computed now (x in memory)"
    ]
    assert "group" not in capsys.readouterr().out  # the progress bar may write; no labels
