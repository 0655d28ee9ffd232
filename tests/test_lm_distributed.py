"""Data-parallel fine-tuning: 2 CPU processes (gloo, started by `accelerate launch`, on loopback) take the same
steps as 1 process with the whole batch, plain and with each cure; on a tiny random Llama (lm_parallel_worker.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lm_parallel_worker as worker
import pytest
import torch

from cfcourse.lm import distributed
from cfcourse.lm import finetune as ft

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    """Every case of the worker on 2 CPU processes, each with half of every batch: what each process returned."""
    out = tmp_path_factory.mktemp("two-processes")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(Path(worker.__file__)), str(out), *worker.CASES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.parametrize("case", list(worker.CASES))
def test_two_processes_take_the_steps_of_one_with_the_whole_batch(two_processes, case):
    one = worker.run(case)  # this process, no launcher: the plain path
    assert one["processes"] == 1
    first, second = (ranks[case] for ranks in two_processes)
    assert first["processes"] == 2
    assert first == second  # every process has the same losses and the same weights
    assert first["losses"] == pytest.approx(one["losses"], rel=1e-5)  # only the order of sums differs
    assert max(abs(a - b) for a, b in zip(first["weights"], one["weights"])) < 1e-5


def test_an_accelerator_on_one_process_changes_no_number():
    from accelerate import Accelerator

    cfg = ft.FinetuneConfig(steps=3, batch_size=3, lr=1e-2, trainable_layers=2, chunk_size=5, l2=1.0)
    plain = ft.finetune(worker.tiny(), worker.blocks(), cfg, old_blocks=worker.blocks(offset=20))
    accelerated = ft.finetune(worker.tiny(), worker.blocks(), cfg, old_blocks=worker.blocks(offset=20),
                              accelerator=Accelerator(cpu=True))
    assert accelerated["losses"] == plain["losses"]
    for p, q in zip(plain["model"].parameters(), accelerated["model"].parameters()):
        assert torch.equal(p, q)


def test_shards_cover_the_batch_in_order():
    batch = torch.arange(10).reshape(5, 2)
    parts = [distributed.shard(batch, rank, 2) for rank in range(2)]
    assert [len(p) for p in parts] == [3, 2] and torch.equal(torch.cat(parts), batch)
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        distributed.shard(batch[:3], 0, 4)


def test_launched_reads_the_launchers_world_size(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched()


def test_every_tensor_a_strategy_holds_is_found():
    from cfcourse.strategies import Compose
    from cfcourse.strategies.regularization import L2
    from cfcourse.strategies.rehearsal import MixedReplay

    l2, replay = L2(l2_lambda=1.0), MixedReplay(buffer_size=4, replay_ratio=0.5)
    l2.anchor = {"w": torch.zeros(2), "b": torch.ones(1)}
    found = list(distributed._tensors(Compose([replay, l2]), set()))
    assert any(t is l2.anchor["w"] for t in found) and any(t is replay.memory.y for t in found)


def test_a_batch_smaller_than_the_processes_is_refused():
    class FourProcesses:
        num_processes = 4

    with pytest.raises(ValueError, match="batch_size is the global batch, shared by 4 processes"):
        distributed.choose(FourProcesses(), 2)
    assert distributed.choose(None, 2) is None or distributed.launched()


# --- the lab commands' --device and --model ------------------------------------------------------------------------

def test_lab_commands_take_a_device_and_record_a_model(capsys, monkeypatch):
    from cfcourse.cli import main
    from cfcourse.lm import lab

    monkeypatch.setenv("CFCOURSE_DEVICE", "")  # restored after the test
    seen = {}

    def record(*settings, **kwargs):
        seen.update(kwargs)
        return {"summary": {"long": {}}, "chosen_at_step": 4, "best_lr": 1e-3, "sweep_source": "this run",
                "seconds": 1.0}

    monkeypatch.setattr(lab, "use_threads", lambda: 1)
    monkeypatch.setattr(lab, "record", record)
    assert main(["lm-record", "--model", "my-model", "--out", "r.json", "--device", "cpu"]) == 0
    assert seen["pretrained"] == "my-model" and os.environ["CFCOURSE_DEVICE"] == "cpu"
    refusals = [(["lm-record", "--model", "my-model"], "--model needs --out")]
    if not torch.cuda.is_available():
        refusals.append((["lm-sweep", "--device", "cuda"], "--device cuda is not available on this machine"))
    for argv, message in refusals:
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2 and message in capsys.readouterr().err


def test_the_tune_script_takes_finetune_configs_fields():
    from cfcourse.lm import tune

    args = tune.parse_args(["--out", "runs/x", "--batch-size", "8", "--replay-ratio", "0.25", "--lora-rank", "4"])
    cfg = ft.FinetuneConfig(**{k: getattr(args, k) for k in tune.CONFIG})
    assert (cfg.batch_size, cfg.replay_ratio, cfg.lora_rank, cfg.steps) == (8, 0.25, 4, ft.FinetuneConfig().steps)
    assert args.domain == "legal" and args.old == "medical" and args.device == "auto"
