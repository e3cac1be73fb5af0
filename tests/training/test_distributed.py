"""The training entry point under torchrun: two CPU processes (gloo), one bundle written by rank 0."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.corpus.build import build_sample

pytestmark = pytest.mark.slow


def test_two_process_data_parallel_training(tmp_path: Path) -> None:
    build_sample(out_dir=tmp_path / "data")
    env = {**os.environ, "SHARELENS_MODELS_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.cli", "train", "--profile", "tiny", "--no-eval",
           "--data-dir", str(tmp_path / "data" / "corpus"), "--max-train-posts", "256",
           "--train-splits", "train"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    bundles = list((tmp_path / "models" / "sharelens-tiny").glob("v*"))
    assert len(bundles) == 1
    import json

    meta = json.loads((bundles[0] / "bundle.json").read_text())
    assert meta["world_size"] == 2
