"""launch() with 2 processes (gloo on the CPU, NCCL where CUDA is available): ranks,
collectives, files written by the main process only.

Budget: the test fails if it takes 20 s or more (collectives also time out after 20 s).
"""

import json
import os
import time
from datetime import timedelta

import pytest
import torch
from _engine_fakes import FakeSegModel, engine_test_env, make_batch  # noqa: F401

from uper_parsing.checkpoint import Checkpointer
from uper_parsing.config import get_cfg
from uper_parsing.engine import create_ddp_model, ddp_options, launch, write_results
from uper_parsing.engine import defaults as engine_defaults
from uper_parsing.engine.launch import _find_free_port
from uper_parsing.utils import comm


def _gather_ranks(output_dir: str) -> None:
    torch.set_num_threads(1)
    rank = comm.get_rank()
    gathered = comm.all_gather(rank)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # NCCL reduces CUDA tensors only
    reduced = torch.tensor(float(rank), device=device)
    torch.distributed.all_reduce(reduced)  # the process group reduces device tensors
    seed = comm.shared_random_seed()
    Checkpointer(FakeSegModel(), output_dir).save("model_0000000", iteration=0)
    write_results({"rank": {"value": rank}}, os.path.join(output_dir, "results.json"))
    comm.synchronize()
    report = {
        "gathered": gathered,
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "env_rank": int(os.environ["RANK"]),
        "mean": float(reduced) / comm.get_world_size(),
        "seed_same": len(set(comm.all_gather(seed))) == 1,
        "backend": torch.distributed.get_backend(),
    }
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)


def test_launch_two_processes(tmp_path):
    start = time.perf_counter()
    launch(
        _gather_ranks,
        num_gpus_per_machine=2,
        dist_url="auto",
        args=(str(tmp_path),),
        timeout=timedelta(seconds=20),
    )
    elapsed = time.perf_counter() - start
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["gathered"] == [0, 1]
        assert report["world_size"] == 2
        assert report["local_rank"] == report["env_rank"] == rank
        assert report["mean"] == 0.5
        assert report["seed_same"]
        expected_backend = "nccl" if torch.cuda.is_available() else "gloo"
        assert report["backend"] == expected_backend
    # only the main process writes checkpoints and results
    assert json.loads((tmp_path / "results.json").read_text()) == {"rank": {"value": 0}}
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000000.pth",
        "rank0.json",
        "rank1.json",
        "results.json",
    ]
    # no process waited out a collective's timeout (generous: spawning two interpreters on a
    # loaded 2-core machine takes 10-30 s)
    assert elapsed < 90, f"launch test took {elapsed:.1f} s"


def test_single_process_calls_directly():
    calls = []
    launch(calls.append, num_gpus_per_machine=1, args=("ran",))
    assert calls == ["ran"] and not torch.distributed.is_initialized()


def test_create_ddp_model_on_cpu(tmp_path, monkeypatch):
    """DDP wrapping without device ids on the CPU, and checkpoints saved unwrapped (a 1-process
    gloo group, told it is one of two, keeps this in-process and fast)."""
    assert create_ddp_model(model := FakeSegModel()) is model  # one process: no wrapper
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_find_free_port()}", rank=0, world_size=1
    )
    try:
        monkeypatch.setattr(engine_defaults.comm, "get_world_size", lambda: 2)
        ddp = create_ddp_model(FakeSegModel())
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        assert ddp.device_ids is None
        Checkpointer(ddp, str(tmp_path)).save("model_final")
    finally:
        torch.distributed.destroy_process_group()
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert set(saved["model"]) == set(FakeSegModel().state_dict())  # no "module." prefix


def _ddp_gradients(options: dict, steps: int = 2) -> list[dict[str, torch.Tensor]]:
    """Per step, the gradients of FakeSegModel (fixed seed) wrapped by create_ddp_model(**options)
    in the current process group, zeroed to None between steps as the trainer does."""
    torch.manual_seed(0)
    model = create_ddp_model(FakeSegModel(), **options)
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    grads = []
    for step in range(steps):
        model.zero_grad(set_to_none=True)
        sum(model(make_batch(step)).values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.module.named_parameters()})
    return grads


def test_ddp_options_of_the_config_reach_ddp_and_keep_the_gradients(monkeypatch):
    """DDP.* (bucket size, gradients as bucket views, static graph, float16 all-reduce) are passed
    to DistributedDataParallel and leave the gradients as they are (a 1-process gloo group told
    it is one of two: the all-reduce averages one process, so only float16 rounds)."""
    cfg = get_cfg()
    assert ddp_options(cfg, FakeSegModel()) == {
        "bucket_cap_mb": 25,
        "gradient_as_bucket_view": False,
        "static_graph": False,
        "fp16_compression": False,
    }  # torch's and detectron2's defaults
    cfg.merge_from_list(["DDP.BUCKET_CAP_MB", 1, "DDP.GRADIENT_AS_BUCKET_VIEW", True])
    cfg.merge_from_list(["DDP.STATIC_GRAPH", True])
    levers = ddp_options(cfg, FakeSegModel())
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_find_free_port()}", rank=0, world_size=1
    )
    try:
        monkeypatch.setattr(engine_defaults.comm, "get_world_size", lambda: 2)
        reference = _ddp_gradients({})
        torch.manual_seed(0)
        wrapped = create_ddp_model(FakeSegModel(), **levers)
        assert wrapped.static_graph and wrapped.gradient_as_bucket_view
        assert wrapped.bucket_bytes_cap == 1024 * 1024
        for mine, theirs in zip(_ddp_gradients(levers), reference, strict=True):
            assert mine.keys() == theirs.keys()
            for name in mine:
                assert torch.equal(mine[name], theirs[name]), name
        for mine, theirs in zip(_ddp_gradients({"fp16_compression": True}), reference):
            for name in mine:  # the all-reduce rounds to float16
                torch.testing.assert_close(mine[name], theirs[name], rtol=1e-3, atol=1e-5)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_options_refuse_a_static_graph_for_a_model_that_changes_its_graph():
    cfg = get_cfg()
    cfg.merge_from_list(["DDP.STATIC_GRAPH", True])
    model = FakeSegModel()
    model.find_unused_parameters = True  # as the unified parser declares
    with pytest.raises(ValueError, match="DDP.STATIC_GRAPH is True but FakeSegModel trains"):
        ddp_options(cfg, model)
    cfg.merge_from_list(["DDP.STATIC_GRAPH", False, "DDP.BUCKET_CAP_MB", 0])
    with pytest.raises(ValueError, match=r"DDP.BUCKET_CAP_MB must be > 0 \(MiB\), got 0"):
        ddp_options(cfg, model)
