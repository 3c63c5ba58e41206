"""BestCheckpointer through DefaultTrainer: model_best.pth on improvement only, both modes, a
missing key, --resume, SOLVER.CHECKPOINT_KEEP."""

from collections import OrderedDict
from typing import Any

import pytest
import torch
from _engine_fakes import (  # noqa: F401
    CrashAt,
    FakeSegModel,
    FakeTrainer,
    engine_test_env,
    make_cfg,
    uper_logs,
)

from uper_parsing.engine import hooks

# evaluations after iterations 1, 3, 5, 7, 9 and the final one (11)
EVAL_ITERS = [1, 3, 5, 7, 9, 11]


class ScriptedTrainer(FakeTrainer):
    """``test`` reports the next of ``scores`` as sem_seg/mIoU."""

    scores: list[float] = []

    @classmethod
    def test(cls, cfg: Any, model: Any, evaluators: Any = None) -> OrderedDict:
        return OrderedDict(sem_seg=OrderedDict(mIoU=cls.scores.pop(0), ranks_agree=1.0))


def _trainer(output_dir, scores=None, resume=False, crash_at=None, **overrides):
    cfg = make_cfg(
        output_dir,
        **{
            "TEST.EVAL_PERIOD": 2,
            "SOLVER.CHECKPOINT_PERIOD": 2,
            "TEST.BEST_CHECKPOINT.METRIC": "sem_seg/mIoU",
            **overrides,
        },
    )
    cls = FakeTrainer if scores is None else type("Scripted", (ScriptedTrainer,), {})
    if scores is not None:
        cls.scores = list(scores)
    trainer = cls(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.register_hooks([CrashAt(crash_at) if crash_at is not None else None])
    return trainer


def _spy_saves(trainer, monkeypatch) -> list[tuple[str, int]]:
    """(name, iteration) of every checkpoint the trainer's checkpointer saves from now on."""
    saves: list[tuple[str, int]] = []
    save = trainer.checkpointer.save

    def recording_save(name: str, **kwargs: Any) -> None:
        saves.append((name, kwargs.get("iteration")))
        save(name, **kwargs)

    monkeypatch.setattr(trainer.checkpointer, "save", recording_save)
    return saves


def _best_saves(saves):
    return [it for name, it in saves if name == "model_best"]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_saves_only_on_improvement(tmp_path, monkeypatch, mode):
    sign = 1 if mode == "max" else -1
    scores = [sign * s for s in [1.0, 3.0, 2.0, 5.0, 4.0, 5.0]]  # a tie is no improvement
    trainer = _trainer(tmp_path, scores, **{"TEST.BEST_CHECKPOINT.MODE": mode})
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(hooks.BestCheckpointer) == kinds.index(hooks.EvalHook) + 1
    saves = _spy_saves(trainer, monkeypatch)
    trainer.train()

    assert _best_saves(saves) == [1, 3, 7]
    best = _load(tmp_path / "model_best.pth")
    assert best["iteration"] == 7
    assert best["best_metric"] == {"name": "sem_seg/mIoU", "value": sign * 5.0, "mode": mode}
    assert {"model", "optimizer", "scheduler"} <= set(best)
    periodic = _load(tmp_path / "model_0000007.pth")["model"]  # the weights evaluated then
    for name, value in best["model"].items():
        assert torch.equal(value, periodic[name]), name
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"  # not tagged


def test_best_file_holds_the_weights_it_was_scored_on(tmp_path, uper_logs):  # noqa: F811
    trainer = _trainer(tmp_path, **{"TEST.EVAL_PERIOD": 3})  # test() = sum of the weights
    results = trainer.train()
    best = _load(tmp_path / "model_best.pth")
    model = FakeSegModel()
    model.load_state_dict(best["model"])
    weight_sum = sum(float(p.detach().sum()) for p in model.parameters())
    assert best["best_metric"]["value"] == pytest.approx(weight_sum, rel=1e-6)
    assert best["best_metric"]["value"] >= results["sem_seg"]["mIoU"]
    assert any(r.getMessage().startswith("New best sem_seg/mIoU") for r in uper_logs)


def test_missing_key_warns_with_the_available_keys(tmp_path, uper_logs):  # noqa: F811
    trainer = _trainer(tmp_path, **{"TEST.BEST_CHECKPOINT.METRIC": "sem_seg/miou"})
    trainer.train()
    assert not (tmp_path / "model_best.pth").exists()
    warnings = [r.getMessage() for r in uper_logs if "stored no 'sem_seg/miou'" in r.getMessage()]
    assert len(warnings) == len(EVAL_ITERS)
    assert "its results keys are sem_seg/mIoU, sem_seg/ranks_agree" in warnings[-1]
    assert "TEST.BEST_CHECKPOINT.METRIC" in warnings[-1]


def test_resume_keeps_the_best(tmp_path, monkeypatch, uper_logs):  # noqa: F811
    out = tmp_path / "run"
    killed = _trainer(
        out, [1.0, 2.0, 3.0, 4.0, 9.0], crash_at=10, **{"SOLVER.CHECKPOINT_PERIOD": 4}
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        killed.train()
    assert (out / "last_checkpoint").read_text() == "model_0000007.pth"
    best_bytes = (out / "model_best.pth").read_bytes()  # after iteration 9, later than the resume
    del killed

    # resumed at 8: 6 after iteration 9 is worse than the file's 9, the final 10 is better
    resumed = _trainer(out, [6.0, 10.0], resume=True, **{"SOLVER.CHECKPOINT_PERIOD": 4})
    assert resumed.start_iter == 8
    saves = _spy_saves(resumed, monkeypatch)
    resumed.train()
    assert type(resumed).scores == []
    messages = [r.getMessage() for r in uper_logs]
    assert any("Best sem_seg/mIoU so far: 9.0000 after iteration 9" in m for m in messages)
    assert any("6.0000 after iteration 9, not better than 9.0000" in m for m in messages)
    assert _best_saves(saves) == [11]
    best = _load(out / "model_best.pth")
    assert (best["iteration"], best["best_metric"]["value"]) == (11, 10.0)
    assert best_bytes != (out / "model_best.pth").read_bytes()


def test_resume_without_improvement_leaves_the_file(tmp_path, monkeypatch):
    first = _trainer(tmp_path, [1.0, 8.0, 2.0, 2.0, 2.0, 2.0])
    first.train()
    best_bytes = (tmp_path / "model_best.pth").read_bytes()
    del first
    # more iterations on the finished run: evaluations after 13 and 15 (final) score lower
    again = _trainer(tmp_path, [7.0, 7.5], resume=True, **{"SOLVER.MAX_ITER": 16})
    saves = _spy_saves(again, monkeypatch)
    again.train()
    assert type(again).scores == []  # both evaluations ran
    assert _best_saves(saves) == []
    assert (tmp_path / "model_best.pth").read_bytes() == best_bytes


def test_checkpoint_keep_leaves_the_best(tmp_path):
    trainer = _trainer(
        tmp_path,
        [5.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        **{"SOLVER.CHECKPOINT_KEEP": 1},
    )
    trainer.train()
    names = sorted(p.name for p in tmp_path.glob("model_*.pth"))
    assert names == ["model_0000011.pth", "model_best.pth", "model_final.pth"]
    assert _load(tmp_path / "model_best.pth")["iteration"] == 1


def test_bad_mode_is_rejected_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"TEST\.BEST_CHECKPOINT\.MODE.*'best'"):
        _trainer(tmp_path, **{"TEST.BEST_CHECKPOINT.MODE": "best"})
