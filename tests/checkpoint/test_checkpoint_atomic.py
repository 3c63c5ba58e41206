"""Checkpointer: atomic saves, resume_or_load semantics, loading that reports every tensor."""

import logging
import os

import pytest
import torch
from torch import nn

from uper_parsing.checkpoint import Checkpointer, PeriodicCheckpointer


class Net(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, classes)


@pytest.fixture
def logs():
    records = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = ListHandler(level=logging.DEBUG)
    logger = logging.getLogger("uper_parsing")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _checkpointer(tmp_path, model=None):
    model = model or Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Checkpointer(model, str(tmp_path), optimizer=optimizer)


def _step(checkpointer):
    """One optimizer step so the weights and momentum buffers change."""
    model = checkpointer.model
    model.zero_grad()
    model.head(model.backbone(torch.randn(1, 3, 5, 5)).mean((2, 3))).sum().backward()
    checkpointer.checkpointables["optimizer"].step()


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"half a checkpoint")  # the process "dies" part-way through writing
    raise OSError("No space left on device")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    checkpointer = _checkpointer(tmp_path)
    _step(checkpointer)
    checkpointer.save("model_0000002", iteration=2)
    saved = {k: v.clone() for k, v in checkpointer.model.state_dict().items()}
    _step(checkpointer)

    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="No space"):
        checkpointer.save("model_0000005", iteration=5)
    with pytest.raises(OSError, match="No space"):
        checkpointer.save("model_0000002", iteration=2)  # overwriting the same name
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    fresh = _checkpointer(tmp_path)
    extra = fresh.resume_or_load("", resume=True)
    assert extra == {"iteration": 2}
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert fresh.checkpointables["optimizer"].state_dict()["state"]  # momentum restored


def test_failed_tag_keeps_previous_last_checkpoint(tmp_path, monkeypatch):
    checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_0000002", iteration=2)
    real_replace = os.replace

    def replace_failing_on_tag(src, dst):
        if str(dst).endswith("last_checkpoint"):  # dies just before renaming the new tag
            raise OSError("I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_on_tag)
    with pytest.raises(OSError, match="I/O error"):
        checkpointer.save("model_0000005", iteration=5)
    monkeypatch.undo()
    # the new checkpoint is complete, but last_checkpoint still names the old one, intact
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert torch.load(tmp_path / "model_0000005.pth", weights_only=True)["iteration"] == 5


def test_resume_or_load(tmp_path):
    trained = _checkpointer(tmp_path / "run")
    _step(trained)
    trained.save("model_0000003", iteration=3)
    weights = str(tmp_path / "run" / "model_0000003.pth")

    # resume=False: MODEL.WEIGHTS, model only
    other = _checkpointer(tmp_path / "run")
    assert other.resume_or_load(weights, resume=False)["iteration"] == 3
    assert other.checkpointables["optimizer"].state_dict()["state"] == {}
    assert torch.equal(other.model.head.weight, trained.model.head.weight)

    # resume=True without last_checkpoint: MODEL.WEIGHTS, model only
    new_dir = _checkpointer(tmp_path / "new")
    new_dir.resume_or_load(weights, resume=True)
    assert new_dir.checkpointables["optimizer"].state_dict()["state"] == {}
    assert torch.equal(new_dir.model.head.weight, trained.model.head.weight)

    # resume=True with last_checkpoint: everything
    resumed = _checkpointer(tmp_path / "run")
    assert resumed.resume_or_load("", resume=True) == {"iteration": 3}
    assert resumed.checkpointables["optimizer"].state_dict()["state"]


def test_load_strips_module_prefix_and_rejects_shape_mismatch(tmp_path):
    source = Net(classes=5)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "ddp.pth"
    torch.save({"model": state}, path)

    target = Net(classes=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="WEIGHTS_PARTIAL") as error:
        Checkpointer(target).load(str(path))
    assert "head.weight: checkpoint (5, 4) vs model (3, 4)" in str(error.value)
    assert "head.bias: checkpoint (5,) vs model (3,)" in str(error.value)
    for name, value in target.state_dict().items():  # nothing loaded
        assert torch.equal(value, before[name]), name


def test_partial_load_skips_shape_mismatch(tmp_path, logs):
    source = Net(classes=5)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "ddp.pth"
    torch.save({"model": state}, path)

    target = Net(classes=3)
    head_before = target.head.weight.clone()
    Checkpointer(target, partial=True).load(str(path))
    assert torch.equal(target.backbone.weight, source.backbone.weight)
    assert torch.equal(target.head.weight, head_before)  # skipped, not half-loaded
    message = next(m for m in logs if "shape-mismatched" in m)
    assert "head.weight: checkpoint (5, 4) vs model (3, 4)" in message
    assert "head.bias: checkpoint (5,) vs model (3,)" in message
    assert not any("missing" in m for m in logs)  # skipped tensors are not also "missing"


class Wider(Net):
    def __init__(self):
        super().__init__()
        self.extra = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))


def test_report_groups_missing_and_unexpected_keys_by_module(tmp_path, logs):
    source = Wider()
    state = source.state_dict()
    del state["extra.0.weight"], state["extra.0.bias"]
    state["old_head.fc.weight"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "w.pth")

    Checkpointer(Wider()).load(str(tmp_path / "w.pth"))
    missing = next(m for m in logs if "missing in the checkpoint" in m)
    assert "2 model tensor(s) missing" in missing
    assert "extra: 2 missing (0.weight, 0.bias)" in missing
    unexpected = next(m for m in logs if "no place for" in m)
    assert "old_head: 1 unexpected (fc.weight)" in unexpected


class Shared(nn.Module):
    """One convolution reached under two names, and a weight tied to another."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.alias = self.conv
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)
        self.b.weight = self.a.weight


def test_a_tensor_loaded_under_another_name_is_not_missing(tmp_path, logs):
    """A shared module or tied weight is saved once under each name; a checkpoint holding it
    under one of them loads it, and only tensors nothing filled are reported missing."""
    state = {k: v for k, v in Shared().state_dict().items() if not k.startswith(("alias.", "b."))}
    torch.save({"model": state}, tmp_path / "w.pth")
    target = Shared()
    Checkpointer(target).load(str(tmp_path / "w.pth"))
    assert torch.equal(target.alias.weight, state["conv.weight"])
    assert torch.equal(target.b.weight, state["a.weight"])
    missing = next(m for m in logs if "missing in the checkpoint" in m)
    assert "1 model tensor(s) missing" in missing and "b: 1 missing (bias)" in missing


def test_load_bare_state_dict(tmp_path):
    source = Net()
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    target = Net()
    Checkpointer(target).load(str(tmp_path / "bare.pth"))
    assert torch.equal(target.head.weight, source.head.weight)


def test_only_main_process_writes(tmp_path):
    checkpointer = Checkpointer(Net(), str(tmp_path), save_to_disk=False)
    checkpointer.save("model_final")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "period, expected",
    [
        (3, ["model_0000002.pth", "model_0000005.pth", "model_final.pth"]),
        (0, ["model_final.pth"]),
    ],
)
def test_periodic_checkpointer_names(tmp_path, period, expected):
    periodic = PeriodicCheckpointer(_checkpointer(tmp_path), period, max_iter=8)
    for it in range(8):
        periodic.step(it)
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth")) == expected
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 7
