"""`accelerate launch` with the shipped configs: two real processes (gloo, on the CPU) training a
tiny recipe together, and every config in configs/accelerate/ readable by accelerate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE

CONFIGS = ROOT / "configs" / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_loads(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.num_processes >= 2 and config.mixed_precision == "no"  # precision comes from the recipe


def test_two_cpu_processes_train_one_model(tmp_path: Path) -> None:
    out = tmp_path / "llama-ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--config_file", str(CONFIGS / "cpu-2proc.yaml"),
        "--main_process_port", str(free_port()),
        "-m", "convdistill.cli.main", "train", "sft", "--config", str(ROOT / "trainers" / "llama-tiny-sft.yaml"),
        "--use_cpu", "true", "--train_file", str(SAMPLE), "--output_dir", str(out),
        "--max_train_examples", "32", "--max_length", "128", "--per_device_train_batch_size", "4",
        "--max_steps", "3", "--logging_steps", "1", "--save_strategy", "no", "--packing", "false",
    ]
    # One torch thread per process: two processes share the two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    log = json.loads((out / "run_log.json").read_text())
    assert log["global_step"] == 3
    steps = [e for e in log["log_history"] if "loss" in e]
    # 32 examples, 4 per process: with two processes one step consumes 8 of them, so three steps
    # are 24/32 = 0.75 epoch (one process alone would be at 0.375).
    assert steps[-1]["epoch"] == pytest.approx(0.75)
    assert (out / "config.json").is_file()  # rank 0 saved the trained model


def test_processes_that_cannot_train_together_are_stopped_before_training(tmp_path: Path) -> None:
    """Two processes under the multi-GPU launcher on a machine without a GPU and without
    --use_cpu: each would train alone on all the data. Refused at once, in one line."""
    out = tmp_path / "alone"
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "convdistill.cli.main", "train", "sft", "--config", str(ROOT / "trainers" / "llama-tiny-sft.yaml"),
        "--train_file", str(SAMPLE), "--output_dir", str(out), "--max_steps", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, done.stderr[-3000:]  # one line from each process
    assert all("add --use_cpu true" in line for line in lines)
    assert "Traceback" not in "\n".join(lines)
    assert not out.exists()  # stopped before anything was loaded or written


def test_launch_check_reads_world_size_and_use_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from convdistill.launch import LaunchError, check_distributed_launch
    from convdistill.trainers import train

    monkeypatch.setattr("convdistill.launch._has_accelerator", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    check_distributed_launch(use_cpu=False)  # a plain run
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_distributed_launch(use_cpu=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_distributed_launch(use_cpu=True)  # gloo on the CPU: fine
    with pytest.raises(LaunchError, match="add --use_cpu true"):
        check_distributed_launch(use_cpu=False)
    # the library call checks too, with the recipe's use_cpu, before any model or data loads
    with pytest.raises(LaunchError, match="add --use_cpu true"):
        train("sft", ROOT / "trainers" / "llama-tiny-sft.yaml", {"output_dir": "/nonexistent/never-written"})
