"""DefaultTrainer end to end on CPU: checkpoints, metrics, results, and exact resumption."""

import json
import os

import pytest
import torch
from _engine_fakes import CrashAt, FakeTrainer, LRRecorder, engine_test_env, make_cfg  # noqa: F401

SCALER_START = {
    "scale": 1024.0,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2,
    "_growth_tracker": 0,
}


def _build(output_dir, amp: bool, resume: bool, crash_at: int | None = None):
    overrides = {"SOLVER.AMP.ENABLED": amp, "SOLVER.AMP.DTYPE": "float16"}
    trainer = FakeTrainer(make_cfg(output_dir, **overrides))
    if amp and not resume:  # a scaler that changes within 12 iterations, to check its restore
        trainer._trainer.grad_scaler.load_state_dict(SCALER_START)
    trainer.resume_or_load(resume=resume)
    recorder = LRRecorder()
    trainer.register_hooks([recorder, CrashAt(crash_at) if crash_at is not None else None])
    return trainer, recorder.lrs


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp_fp16"])
def test_killed_run_resumes_exactly(tmp_path, amp):
    full, full_lrs = _build(tmp_path / "full", amp, resume=False)
    full_results = full.train()

    killed, _ = _build(tmp_path / "killed", amp, resume=False, crash_at=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        killed.train()
    out = tmp_path / "killed"
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    assert not (out / "results.json").exists()  # no evaluation after a failed run
    del killed

    resumed, resumed_lrs = _build(out, amp, resume=True)
    assert resumed.start_iter == 6
    resumed_results = resumed.train()

    assert sorted(resumed_lrs) == list(range(6, 12))
    for it in range(6, 12):
        assert resumed_lrs[it] == full_lrs[it], f"lr differs at iteration {it}"
    full_state = full.checkpointer.model.state_dict()
    for name, value in resumed.checkpointer.model.state_dict().items():
        assert torch.equal(value, full_state[name]), name
    full_opt, resumed_opt = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for idx, state in full_opt["state"].items():
        assert torch.equal(resumed_opt["state"][idx]["momentum_buffer"], state["momentum_buffer"])
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch == 12
    if amp:
        full_scale = full._trainer.grad_scaler.get_scale()
        assert full_scale > SCALER_START["scale"]  # it did grow, so the check means something
        assert resumed._trainer.grad_scaler.get_scale() == full_scale
        assert resumed._trainer.grad_scaler.get_growth_interval() == 2
    assert resumed_results == full_results
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(full_results))


def test_outputs_of_a_training_run(tmp_path):
    trainer = FakeTrainer(make_cfg(tmp_path, **{"TEST.EVAL_PERIOD": 5}))
    trainer.resume_or_load(resume=True)  # nothing to resume: starts at 0
    assert trainer.start_iter == 0
    results = trainer.train()

    names = sorted(os.listdir(tmp_path))
    for it in (2, 5, 8, 11):
        assert f"model_{it:07d}.pth" in names
    assert "model_final.pth" in names and "last_checkpoint" in names
    assert not [n for n in names if n.endswith(".tmp")]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 11
    # config and metadata: what Predictor.from_checkpoint reads (tests/engine/test_predictor.py)
    assert set(final) == {
        "model", "optimizer", "scheduler", "data_stream", "iteration", "config", "metadata"
    }  # fmt: skip
    assert final["data_stream"] == {}  # the fake loader is no TrainStream: nothing to continue
    assert any(n.startswith("events.out.tfevents") for n in names)

    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert all("iteration" in line for line in lines)
    train_line = next(line for line in lines if line["iteration"] == 11 and "total_loss" in line)
    assert {"loss_x", "loss_y", "lr", "data_time", "time"} <= set(train_line)
    evals = {line["iteration"]: line["sem_seg/mIoU"] for line in lines if "sem_seg/mIoU" in line}
    # evaluated after iterations 4 and 9 and at the end; the writer (every 20 iterations and at
    # the end) reports each metric's latest value, so the one after iteration 4 is not written
    assert sorted(evals) == [9, 12]
    assert evals[12] == pytest.approx(results["sem_seg"]["mIoU"])

    written = json.loads((tmp_path / "results.json").read_text())
    assert written == {"sem_seg": {"mIoU": results["sem_seg"]["mIoU"], "ranks_agree": 1.0}}


def test_load_model_weights_without_resuming(tmp_path):
    source = FakeTrainer(make_cfg(tmp_path / "a"))
    source.train()
    weights = str(tmp_path / "a" / "model_final.pth")

    trainer = FakeTrainer(make_cfg(tmp_path / "b", **{"MODEL.WEIGHTS": weights}))
    trainer.resume_or_load(resume=True)  # no last_checkpoint in b: weights only, from 0
    assert trainer.start_iter == 0
    for name, value in trainer.checkpointer.model.state_dict().items():
        assert torch.equal(value, source.checkpointer.model.state_dict()[name]), name
    assert trainer.optimizer.state_dict()["state"] == {}  # optimizer not loaded
    assert trainer.scheduler.last_epoch == 0
