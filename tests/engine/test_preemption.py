"""Preemption: SIGTERM / SIGUSR1 stop training after an iteration every process agrees on, save it
as a periodic checkpoint, and ``--resume`` continues at the next iteration (nothing lost, nothing
repeated)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from _engine_fakes import FakeTrainer, engine_test_env, make_cfg  # noqa: F401

from uper_parsing.engine import (
    PREEMPTED_EXIT_CODE,
    HookBase,
    TrainingPreempted,
    launch,
    train_model,
)
from uper_parsing.utils import comm

ROOT = Path(__file__).resolve().parents[2]


class SignalAt(HookBase):
    """Sends ``signum`` to its own process when iteration ``iteration`` starts (on ``ranks``)."""

    def __init__(self, iteration: int, signum: int = signal.SIGTERM, ranks=(0,)) -> None:
        self.iteration, self.signum, self.ranks = iteration, signum, ranks

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration and comm.get_rank() in self.ranks:
            os.kill(os.getpid(), self.signum)


class StepRecorder(HookBase):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def after_step(self) -> None:
        self.steps.append(self.trainer.iter)


def _trainer(output_dir: Path, *hooks: HookBase, resume: bool = False) -> FakeTrainer:
    trainer = FakeTrainer(make_cfg(output_dir))
    trainer.resume_or_load(resume=resume)
    trainer.register_hooks(hooks)
    return trainer


def _previous_handler(signum, frame):  # what a caller had installed before training
    raise AssertionError("the trainer's handler should have been called instead")


@pytest.mark.parametrize(
    ("stop_at", "signum"), [(4, signal.SIGTERM), (5, signal.SIGUSR1)], ids=["sigterm", "sigusr1"]
)
def test_signal_saves_the_iteration_and_resume_continues_it(tmp_path, stop_at, signum):
    full = _trainer(tmp_path / "full")
    full_results = full.train()

    out = tmp_path / "stopped"
    recorder = StepRecorder()
    stopped = _trainer(out, SignalAt(stop_at, signum), recorder)
    previous = signal.signal(signum, _previous_handler)
    try:
        with pytest.raises(TrainingPreempted) as stop:
            stopped.train()
        assert signal.getsignal(signum) is _previous_handler  # restored after training
    finally:
        signal.signal(signum, previous)
    assert PREEMPTED_EXIT_CODE not in (0, 1, 2) and PREEMPTED_EXIT_CODE < 128

    assert recorder.steps == list(range(stop_at + 1))  # iteration stop_at completed, no more
    assert stop.value.iteration == stopped.iter == stop_at and stopped.stopped
    name = f"model_{stop_at:07d}.pth"  # 5: also the periodic checkpoint (period 3), saved once
    assert stop.value.checkpoint == str(out / name)
    assert (out / "last_checkpoint").read_text() == name
    saved = torch.load(out / name, weights_only=True)
    assert saved["iteration"] == stop_at
    assert set(saved) == {
        "model",
        "optimizer",
        "scheduler",
        "data_stream",
        "iteration",
        "config",
        "metadata",
    }  # a periodic one's (config and metadata: what Predictor.from_checkpoint reads)
    assert saved["scheduler"]["last_epoch"] == stop_at + 1
    assert not (out / "results.json").exists()  # not evaluated
    del stopped

    resumed_steps = StepRecorder()
    resumed = _trainer(out, resumed_steps, resume=True)
    assert resumed.start_iter == stop_at + 1
    assert resumed.train() == full_results
    assert resumed_steps.steps == list(range(stop_at + 1, 12))
    full_state = full.checkpointer.model.state_dict()
    for key, value in resumed.checkpointer.model.state_dict().items():
        assert torch.equal(value, full_state[key]), key


def test_signal_in_the_last_iteration_completes_the_run(tmp_path):
    trainer = _trainer(tmp_path, SignalAt(11))
    results = trainer.train()  # nothing left to stop: an ordinary end
    assert not trainer.stopped and trainer.iter == 12 and results
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


class PhaseTrainer(FakeTrainer):
    """FakeTrainer that records each phase it is built for and stops the first one at 1."""

    built: list[str] = []

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        PhaseTrainer.built.append(os.path.basename(cfg.OUTPUT_DIR))
        if len(PhaseTrainer.built) == 1:
            self.register_hooks([SignalAt(1)])


def test_stop_in_the_first_phase_does_not_start_the_texture_phase(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.MODEL.META_ARCHITECTURE = "UnifiedPerceptualParser"
    cfg.MODEL.MULTITASK.TASKS = ["object", "texture"]
    cfg.MODEL.MULTITASK.TEXTURE_PHASE_ITERS = 2
    PhaseTrainer.built = []
    with pytest.raises(TrainingPreempted) as stop:
        train_model(cfg, resume=False, trainer_cls=PhaseTrainer)
    assert stop.value.iteration == 1 and PhaseTrainer.built == ["first_phase"]
    assert (tmp_path / "first_phase/last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "last_checkpoint").exists()


def _train_two_ranks(output_dir: str) -> None:
    """Rank 1 alone is signalled at iteration 3 (rank 0 never): both must stop after the next
    read of the losses that every process takes part in, iteration 5 (SOLVER.LOG_PERIOD 20 and
    SOLVER.CHECKPOINT_PERIOD 3: reads after 2, 5, 8, ...)."""
    torch.set_num_threads(1)
    recorder = StepRecorder()
    trainer = _trainer(Path(output_dir), SignalAt(3, ranks=(1,)), recorder)
    try:
        trainer.train()
    finally:
        with open(os.path.join(output_dir, f"steps{comm.get_rank()}.json"), "w") as f:
            json.dump(recorder.steps, f)


def test_two_processes_agree_on_the_stop_iteration(tmp_path):
    start = time.perf_counter()
    with pytest.raises(TrainingPreempted):
        launch(
            _train_two_ranks,
            num_gpus_per_machine=2,
            dist_url="auto",
            args=(str(tmp_path),),
            timeout=timedelta(seconds=30),
        )
    for rank in (0, 1):
        assert json.loads((tmp_path / f"steps{rank}.json").read_text()) == list(range(6))
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    saved = torch.load(tmp_path / "model_0000005.pth", weights_only=True)
    assert saved["iteration"] == 5
    assert time.perf_counter() - start < 40


@pytest.fixture(scope="module")
def datasets_dir(synthetic_datasets) -> Path:
    return synthetic_datasets  # the synthetic scenes of the whole run (tests/conftest.py)


def _train_net(
    datasets: Path, out: Path, console: Path, *opts: str, overrides: Sequence[str] = ()
) -> subprocess.Popen:
    """train_net.py on the smallest quickstart, 8 small iterations with 2 loader workers and a
    fixed seed (then ``overrides``), its console output in ``console``; in a new session, so that
    ``os.killpg`` reaches the loader workers and the processes ``launch`` spawns too."""
    env = dict(os.environ, UPER_PARSING_DATASETS=str(datasets), OMP_NUM_THREADS="1")
    config = "configs/quickstart/semantic_fpn_R18_synthetic.yaml"
    cmd = [sys.executable, str(ROOT / "train_net.py"), "--config-file", config, *opts,
           "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "2",
           "INPUT.CROP.SIZE", "[64, 64]", "DATALOADER.NUM_WORKERS", "2", "SEED", "7",
           "TEST.VIS_NUM_IMAGES", "0", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
           *overrides]  # fmt: skip
    with console.open("w") as f:  # a file, not a pipe: nobody reads while it trains
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model_final.pth", weights_only=True)["model"]


def _assert_bitwise_equal(weights: dict, reference: dict) -> None:
    assert weights.keys() == reference.keys()
    differ = [k for k in reference if not torch.equal(weights[k], reference[k])]
    assert not differ, f"{len(differ)} of {len(reference)} tensors differ, e.g. {differ[:3]}"


def _wait_for(path: Path, proc: subprocess.Popen, console: Path) -> None:
    deadline = time.monotonic() + 240
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before {path.name}: {console.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def uninterrupted(datasets_dir, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of the run the interrupted ones must reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _train_net(datasets_dir, out, out / "console.txt")
    assert proc.wait(timeout=240) == 0, (out / "console.txt").read_text()[-4000:]
    return _final_weights(out)


@pytest.mark.slow
def test_sigkill_then_resume_equals_the_uninterrupted_run(datasets_dir, tmp_path, uninterrupted):
    """Killed without warning (SIGKILL to the process and its loader workers) after the
    checkpoint of iteration 3, then resumed: the same data, augmentations and model randomness
    as without the kill, so the same weights, bit for bit (CPU)."""
    out, console = tmp_path / "run", tmp_path / "console.txt"
    proc = _train_net(datasets_dir, out, console)
    _wait_for(out / "model_0000003.pth", proc, console)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = _train_net(datasets_dir, out, console, "--resume")
    assert resumed.wait(timeout=240) == 0, console.read_text()[-4000:]
    log = (out / "log.txt").read_text()
    assert "The data stream continues at batch" in log
    _assert_bitwise_equal(_final_weights(out), uninterrupted)


# 2 gloo processes of 1 image each, 1 loader worker each (6 processes on a 2-core machine)
TWO_PROCESSES = {
    "opts": ("--num-gpus", "2", "--dist-url", "auto"),
    "overrides": ("DATALOADER.NUM_WORKERS", "1"),
}


@pytest.fixture(scope="module")
def uninterrupted_two_processes(datasets_dir, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("uninterrupted_two_processes")
    proc = _train_net(
        datasets_dir, out, out / "console.txt", *TWO_PROCESSES["opts"],
        overrides=TWO_PROCESSES["overrides"],
    )  # fmt: skip
    assert proc.wait(timeout=240) == 0, (out / "console.txt").read_text()[-4000:]
    return _final_weights(out)


@pytest.mark.slow
def test_two_processes_sigkill_then_resume_equals_the_uninterrupted_run(
    datasets_dir, tmp_path, uninterrupted_two_processes
):
    """``--num-gpus 2``: the ranks ``launch`` spawns outlive a killed parent, so the whole
    process group (parent, ranks, loader workers) is killed after the checkpoint of iteration 3;
    resumed with 2 processes, the run ends with the uninterrupted run's weights, bit for bit."""
    out, console = tmp_path / "run", tmp_path / "console.txt"
    opts, overrides = TWO_PROCESSES["opts"], TWO_PROCESSES["overrides"]
    proc = _train_net(datasets_dir, out, console, *opts, overrides=overrides)
    _wait_for(out / "model_0000003.pth", proc, console)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = _train_net(datasets_dir, out, console, *opts, "--resume", overrides=overrides)
    assert resumed.wait(timeout=240) == 0, console.read_text()[-4000:]
    assert "The data stream continues at batch" in (out / "log.txt").read_text()
    _assert_bitwise_equal(_final_weights(out), uninterrupted_two_processes)


@pytest.mark.slow
def test_train_net_exits_with_the_preempted_code_and_resumes(datasets_dir, tmp_path, uninterrupted):
    out, console = tmp_path / "run", tmp_path / "console.txt"
    proc = _train_net(datasets_dir, out, console)
    # the first periodic checkpoint: training is under way
    _wait_for(out / "model_0000001.pth", proc, console)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, console.read_text()[-4000:]

    name = (out / "last_checkpoint").read_text().strip()
    stop_iter = torch.load(out / name, weights_only=True)["iteration"]
    assert name == f"model_{stop_iter:07d}.pth" and 1 <= stop_iter < 7
    assert f"Training stopped on request after iteration {stop_iter}" in console.read_text()

    resumed = _train_net(datasets_dir, out, console, "--resume")
    resumed.wait(timeout=240)
    assert resumed.returncode == 0, console.read_text()[-4000:]
    assert f"Resuming training at iteration {stop_iter + 1}" in (out / "log.txt").read_text()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 7
    _assert_bitwise_equal(_final_weights(out), uninterrupted)  # the run that would have happened
