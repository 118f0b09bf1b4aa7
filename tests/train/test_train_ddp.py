"""DDP: two CPU processes with the gloo backend train in lockstep; only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from ich.config import load_config
    from ich.train.common import resolve_device, seed_everything
    from ich.train.distributed import cleanup_distributed, init_distributed
    from ich.train.loop import train_slice_model
    from ich.train.runner import prepare_run, split_indices

    cache, run = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = load_config(None, sys.argv[3:])
    device = resolve_device("cpu")
    info = init_distributed(device)
    seed_everything(cfg.train.seed + info.rank)
    c, folds = prepare_run(cfg, cache, run, info)
    tr, va = split_indices(cfg, c, folds)
    res = train_slice_model(cfg, c, tr, va, run, device, info)
    torch.save(res.model.state_dict(), run / f"rank{info.rank}.pt")
    cleanup_distributed(info)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks_agree(tiny_cache: Path, tmp_path: Path, tiny_overrides: list[str]) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(tiny_cache),
        str(run),
        *tiny_overrides,
        "train.epochs=2",
        "train.max_steps_per_epoch=2",
        "train.batch_size=8",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(run / "rank0.pt")
    w1 = torch.load(run / "rank1.pt")
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert (run / "checkpoints" / "slice_last.safetensors").is_file()
    assert not list(run.glob("checkpoints/.*tmp"))
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in epochs if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]  # written once (rank 0), not per rank
    from ich.runs.checkpoint import load_model_file
    from ich.train.checkpoint import load_train_state

    point = load_train_state(run / "checkpoints" / "slice_last.state.pt")
    assert point.state.step == 4  # 2 steps per epoch on each rank
    weights, _ = load_model_file(run / "checkpoints" / "slice_last.safetensors")
    for key in w0:
        assert torch.equal(weights[key], w0[key]), key
