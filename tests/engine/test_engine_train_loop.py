"""SimpleTrainer / AMPTrainer steps, clipping, NaN detection and the hook protocol."""

import pytest
import torch
from _engine_fakes import (
    FakeSegModel,
    IterationSeededLoader,
    engine_test_env,  # noqa: F401
    make_batch,
    make_cfg,
)

from uper_parsing.checkpoint import Checkpointer
from uper_parsing.engine import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from uper_parsing.engine.hooks import EvalHook, PeriodicCheckpointer, PeriodicWriter
from uper_parsing.solver import build_gradient_clipper
from uper_parsing.utils.events import EventStorage, EventWriter, get_event_storage


def _trainer(cls=SimpleTrainer, loader=None, grad_clip=None, lr=0.1, **kwargs):
    torch.manual_seed(0)
    model = FakeSegModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = loader or IterationSeededLoader()
    return cls(model, loader, optimizer, grad_clip=grad_clip, **kwargs)


def _grad_recorder(trainer):
    """Wrap optimizer.step to record the gradients it is about to apply."""
    seen = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]
        seen.append(grads)
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen


def test_simple_trainer_writes_losses_and_updates_weights():
    trainer = _trainer()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train(0, 3)
    assert trainer.iter == 3
    histories = trainer.storage.histories()
    assert {"total_loss", "loss_x", "loss_y", "data_time"} <= set(histories)
    assert len(histories["total_loss"].values()) == 3
    latest = trainer.storage.latest()
    assert latest["total_loss"][0] == pytest.approx(latest["loss_x"][0] + latest["loss_y"][0])
    assert all(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))


def test_nan_loss_raises_before_the_step():
    trainer = _trainer(loader=IterationSeededLoader(nan_at=2))
    seen = _grad_recorder(trainer)
    with pytest.raises(FloatingPointError, match=r"iteration=2[\s\S]*loss_x"):
        trainer.train(0, 5)
    assert trainer.iter == 2
    assert len(seen) == 2  # iterations 0 and 1 stepped, the NaN one did not


class _NoHostCopies:
    """Counts the ``Tensor.cpu()`` calls (the trainer's loss reads) while active."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = torch.Tensor.cpu

        def counting_cpu(tensor, *args, **kwargs):
            self.calls += 1
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)


def test_log_period_reads_losses_once_a_period_and_writes_each_iteration(monkeypatch):
    every = _trainer()
    every.train(0, 10)
    copies = _NoHostCopies(monkeypatch)
    batched = _trainer(log_period=4)
    batched.train(0, 10)
    assert copies.calls == 3  # after iterations 3, 7 and the last one (9)
    for name in ("total_loss", "loss_x", "loss_y"):
        assert batched.storage.history(name).values() == every.storage.history(name).values()
    assert [it for _, it in batched.storage.history("data_time").values()] == list(range(10))
    for b, e in zip(batched.model.parameters(), every.model.parameters()):
        assert torch.equal(b, e)


def test_nan_loss_raises_at_the_read_naming_its_iteration():
    trainer = _trainer(loader=IterationSeededLoader(nan_at=2), log_period=4)
    seen = _grad_recorder(trainer)
    with pytest.raises(FloatingPointError, match=r"iteration=2[\s\S]*loss_x"):
        trainer.train(0, 10)
    assert trainer.iter == 3  # read after iteration 3, before its optimizer step
    assert len(seen) == 3


def test_a_hook_reading_the_losses_first_flushes_them(tmp_path):
    """The writer reads after its own period even when the loss reads are rarer, and a non-finite
    loss raises before a checkpoint is saved."""
    trainer = _trainer(log_period=100)
    writer = _RecordingWriter()
    trainer.register_hooks([PeriodicWriter([writer], period=3)])
    trainer.train(0, 7)
    assert [latest["total_loss"][1] for latest in writer.written] == [2, 5, 6, 6]

    trainer = _trainer(loader=IterationSeededLoader(nan_at=1), log_period=100)
    checkpointer = Checkpointer(trainer.model, str(tmp_path))
    trainer.register_hooks([PeriodicCheckpointer(checkpointer, 3)])
    with pytest.raises(FloatingPointError, match="iteration=1"):
        trainer.train(0, 7)
    assert list(tmp_path.iterdir()) == []  # the diverged weights of iteration 2 were not saved


class _RecordingWriter(EventWriter):
    def __init__(self):
        self.written = []

    def write(self):
        self.written.append(dict(get_event_storage().latest()))


def test_norm_clipping_bounds_the_gradient_norm():
    cfg = make_cfg("unused")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    unclipped = _trainer()
    unclipped_grads = _grad_recorder(unclipped)
    unclipped.train(0, 1)
    clipped = _trainer(grad_clip=build_gradient_clipper(cfg))
    clipped_grads = _grad_recorder(clipped)
    clipped.train(0, 1)

    def norm(grads):
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    assert norm(unclipped_grads[0]) > 0.1  # the test is meaningful: clipping had work to do
    assert norm(clipped_grads[0]) == pytest.approx(0.01, rel=1e-4)
    # direction kept: clipped = unclipped * (0.01 / norm)
    scale = 0.01 / norm(unclipped_grads[0])
    for g_clip, g_full in zip(clipped_grads[0], unclipped_grads[0]):
        torch.testing.assert_close(g_clip, g_full * scale, rtol=1e-4, atol=1e-7)


def test_value_clipping_bounds_each_gradient():
    cfg = make_cfg("unused")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.002
    trainer = _trainer(grad_clip=build_gradient_clipper(cfg))
    seen = _grad_recorder(trainer)
    trainer.train(0, 1)
    assert max(float(g.abs().max()) for g in seen[0]) == pytest.approx(0.002)


def test_clipper_disabled_by_default():
    assert build_gradient_clipper(make_cfg("unused")) is None


def test_amp_bfloat16_on_cpu():
    trainer = _trainer(AMPTrainer, precision=torch.bfloat16)
    assert trainer.grad_scaler is None and trainer.state_dict() == {}
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train(0, 2)
    assert trainer.model.last_activation_dtype == torch.bfloat16  # autocast was on
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))
    assert torch.isfinite(torch.tensor(trainer.storage.latest()["total_loss"][0]))


def test_amp_float16_unscales_before_clipping():
    seen_norms = []

    def clip(params):
        params = list(params)
        seen_norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1e9)))

    trainer = _trainer(AMPTrainer, grad_clip=clip, precision=torch.float16)
    assert trainer.grad_scaler is not None
    trainer.train(0, 2)
    reference = _trainer()
    reference_grads = _grad_recorder(reference)
    reference.train(0, 1)
    reference_norm = float(
        torch.linalg.vector_norm(torch.stack([g.norm() for g in reference_grads[0]]))
    )
    # unscaled gradients: about the fp32 norm, not 65536 times it
    assert seen_norms[0] == pytest.approx(reference_norm, rel=0.05)
    assert set(trainer.state_dict()) == {"grad_scaler"}


def test_model_must_return_losses_in_training():
    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return [self.w]

    model = Bad()
    trainer = SimpleTrainer(model, [make_batch(0)] * 3, torch.optim.SGD(model.parameters(), 0.1))
    with pytest.raises(TypeError, match="dict of scalar losses"):
        trainer.train(0, 1)


class _Events(HookBase):
    def __init__(self, log):
        self.log = log

    def before_train(self):
        self.log.append(("before_train", self.trainer.iter))

    def before_step(self):
        self.log.append(("before_step", self.trainer.iter))

    def after_step(self):
        self.log.append(("after_step", self.trainer.iter))

    def after_train(self):
        self.log.append(("after_train", self.trainer.iter))


class _CountingTrainer(TrainerBase):
    def __init__(self, fail_at=None):
        super().__init__()
        self.fail_at = fail_at

    def run_step(self):
        if self.iter == self.fail_at:
            raise ValueError("boom")


def test_hook_order_and_completion_marker():
    log = []
    trainer = _CountingTrainer()
    trainer.register_hooks([_Events(log), None])
    trainer.train(2, 4)
    assert log == [
        ("before_train", 2),
        ("before_step", 2),
        ("after_step", 2),
        ("before_step", 3),
        ("after_step", 3),
        ("after_train", 4),
    ]


def test_eval_hook_periods_and_no_eval_after_failure():
    calls = []

    def evaluate():
        calls.append(int(trainer.iter))
        return {"sem_seg": {"mIoU": 10.0 * len(calls), "IoU-wall": 5.0}, "note": {"x": "text"}}

    trainer = _CountingTrainer()
    trainer.register_hooks([EvalHook(3, evaluate)])
    trainer.train(0, 7)
    assert calls == [2, 5, 7]  # after iterations 2 and 5, then once training completed
    history = trainer.storage.history("sem_seg/mIoU").values()
    assert history == [(10.0, 2), (20.0, 5), (30.0, 7)]
    assert "sem_seg/IoU-wall" in trainer.storage.histories()
    assert "note/x" not in trainer.storage.histories()  # not a number: skipped

    calls.clear()
    trainer = _CountingTrainer(fail_at=4)
    trainer.register_hooks([EvalHook(0, evaluate)])
    with pytest.raises(ValueError, match="boom"):
        trainer.train(0, 7)
    assert calls == []


def test_periodic_writer_period_and_end():
    class Recorder(EventWriter):
        def __init__(self):
            self.writes, self.closed = [], False

        def write(self):
            self.writes.append(int(trainer.iter))

        def close(self):
            self.closed = True

    recorder = Recorder()
    trainer = _CountingTrainer()
    trainer.register_hooks([PeriodicWriter([recorder], period=4)])
    trainer.train(0, 10)
    assert recorder.writes == [3, 7, 9, 10] and recorder.closed


def test_event_storage_required():
    from uper_parsing.utils.events import get_event_storage

    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()
    with EventStorage(5) as storage:
        assert get_event_storage() is storage


def test_replacing_the_data_loader_takes_effect_at_the_next_step():
    seen = []

    class Recording(FakeSegModel):
        def forward(self, batch):
            seen.append(batch[0]["tag"])
            return {"loss": self.head.weight.sum()}

    model = Recording()
    trainer = SimpleTrainer(
        model, iter([[{"tag": "a"}]] * 5), torch.optim.SGD(model.parameters(), 0.1)
    )
    with EventStorage(0) as trainer.storage:
        trainer.run_step()
        trainer.data_loader = [[{"tag": "b"}]] * 5
        trainer.run_step()
    assert seen == ["a", "b"]


def test_benchmark_fixed_batch_picks_the_batch_labelling_most_tasks():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    batches = [
        [{"tasks": ["texture"]}],
        [{"tasks": ["object", "part", "scene"]}],
        [{"tasks": ["material"]}],
    ]
    assert tool._richest_batch(iter(batches)) is batches[1]
    plain = [[{"image": 0}], [{"image": 1}]]
    assert tool._richest_batch(iter(plain)) is plain[0]
