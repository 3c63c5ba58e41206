"""Checkpoints, nothing lost: resume skips damaged files, old ones are pruned, failed writes
change nothing."""

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from uper_parsing.checkpoint import Checkpointer, PeriodicCheckpointer, atomic
from uper_parsing.config import get_cfg


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


@pytest.fixture
def warnings():
    """Messages of WARNING and above logged under ``uper_parsing``."""
    records = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = ListHandler(level=logging.WARNING)
    logger = logging.getLogger("uper_parsing")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _checkpointer(directory):
    model = Net()
    return Checkpointer(model, str(directory), optimizer=torch.optim.SGD(model.parameters(), lr=1))


def _save_at(checkpointer, iteration):
    """Change the weights to ``iteration`` and save ``model_{iteration:07d}``."""
    with torch.no_grad():
        checkpointer.model.fc.weight.fill_(float(iteration))
    checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
    return os.path.join(checkpointer.save_dir, f"model_{iteration:07d}.pth")


def _truncate(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def _garbage(path):
    Path(path).write_bytes(b"\x00\xffnot a checkpoint" * 50)


def _without_model(path):
    torch.save({"iteration": 5, "optimizer": {}}, path)


DAMAGES = {
    "truncated": (_truncate, "cannot be read"),
    "garbage": (_garbage, "cannot be read"),
    "no_model": (_without_model, "no 'model' entry"),
    "missing": (os.remove, "does not exist"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_skips_a_damaged_last_checkpoint(tmp_path, warnings, damage):
    run = _checkpointer(tmp_path)
    _save_at(run, 2)
    _save_at(run, 5)
    bad = _save_at(run, 8)
    damage_file, problem = DAMAGES[damage]
    damage_file(bad)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000008.pth"

    resumed = _checkpointer(tmp_path)
    assert resumed.resume_or_load("", resume=True) == {"iteration": 5}  # the newest good one
    assert torch.all(resumed.model.fc.weight == 5)
    assert resumed.has_checkpoint()  # the trainer asks again to set its start iteration
    assert resumed.get_checkpoint_file() == os.path.join(str(tmp_path), "model_0000005.pth")
    about_bad = [m for m in warnings if bad in m and problem in m]
    assert len(about_bad) == 1, warnings  # named once, however often the trainer asks


def test_resume_prefers_a_good_model_final(tmp_path, warnings):
    run = _checkpointer(tmp_path)
    _save_at(run, 2)
    with torch.no_grad():
        run.model.fc.weight.fill_(9.0)
    run.save("model_final", iteration=9)
    bad = _save_at(run, 5)  # e.g. a second run into the same folder, killed by a full disk
    _truncate(bad)

    resumed = _checkpointer(tmp_path)
    assert resumed.resume_or_load("", resume=True) == {"iteration": 9}
    assert any(bad in m for m in warnings)


def test_resume_without_any_good_checkpoint_loads_the_weights(tmp_path, warnings):
    weights = _save_at(_checkpointer(tmp_path / "pretrained"), 3)
    run = _checkpointer(tmp_path / "run")
    bad = _save_at(run, 2)
    _garbage(bad)

    resumed = _checkpointer(tmp_path / "run")
    assert not resumed.has_checkpoint()  # so the trainer starts at iteration 0
    resumed.resume_or_load(weights, resume=True)
    assert torch.all(resumed.model.fc.weight == 3)
    assert resumed.checkpointables["optimizer"].state_dict()["state"] == {}  # model only
    assert any(bad in m for m in warnings)
    assert any("no good checkpoint" in m and weights in m for m in warnings), warnings


def test_resume_without_last_checkpoint_is_a_fresh_start(tmp_path, warnings):
    """Unchanged: no ``last_checkpoint`` means nothing to resume, silently."""
    resumed = _checkpointer(tmp_path)
    before = resumed.model.fc.weight.clone()
    assert not resumed.has_checkpoint()
    assert resumed.resume_or_load("", resume=True) == {}
    assert torch.equal(resumed.model.fc.weight, before)
    assert warnings == []


def _periodic_files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".pth"))


def test_checkpoint_keep_prunes_old_periodic_checkpoints(tmp_path):
    periodic = PeriodicCheckpointer(_checkpointer(tmp_path), 2, max_iter=10, max_to_keep=2)
    for it in range(10):  # saves after iterations 1, 3, 5, 7, 9 and model_final
        periodic.step(it)
    assert _periodic_files(tmp_path) == [
        "model_0000007.pth",
        "model_0000009.pth",
        "model_final.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_checkpoint_keep_counts_checkpoints_of_an_earlier_run(tmp_path):
    first = PeriodicCheckpointer(_checkpointer(tmp_path), 2, max_iter=10, max_to_keep=2)
    for it in range(6):  # killed after iteration 5: 3 and 5 kept
        first.step(it)
    resumed = PeriodicCheckpointer(_checkpointer(tmp_path), 2, max_iter=10, max_to_keep=2)
    for it in range(6, 10):
        resumed.step(it)
    assert _periodic_files(tmp_path) == [
        "model_0000007.pth",
        "model_0000009.pth",
        "model_final.pth",
    ]


def test_checkpoint_keep_spares_the_file_last_checkpoint_names(tmp_path):
    checkpointer = _checkpointer(tmp_path)
    for iteration in (1, 3, 5, 7):
        _save_at(checkpointer, iteration)
    checkpointer.tag_last_checkpoint("model_0000001.pth")  # e.g. rolled back by hand
    PeriodicCheckpointer(checkpointer, 2, max_to_keep=1).delete_old_checkpoints()
    assert _periodic_files(tmp_path) == ["model_0000001.pth", "model_0000007.pth"]


def test_checkpoint_keep_zero_keeps_all(tmp_path):
    assert get_cfg().SOLVER.CHECKPOINT_KEEP == 0
    periodic = PeriodicCheckpointer(_checkpointer(tmp_path), 1, max_iter=4, max_to_keep=0)
    for it in range(4):
        periodic.step(it)
    assert len(_periodic_files(tmp_path)) == 5


class _FullDisk:
    """A file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, f, room):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            self._f.write(bytes(data[: self._room]))
            raise OSError(28, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _full_disk_open(*args, **kwargs):
    """``open`` for atomic_write, on a disk with 200 bytes left."""
    return _FullDisk(open(*args, **kwargs), 200)  # noqa: SIM115 (the writer closes it)


@pytest.mark.parametrize("name", ["model_0000005", "model_0000002"], ids=["new", "overwrite"])
def test_failed_write_changes_nothing_and_names_the_file(tmp_path, monkeypatch, name):
    checkpointer = _checkpointer(tmp_path)
    old = _save_at(checkpointer, 2)
    old_bytes = Path(old).read_bytes()

    monkeypatch.setattr(atomic, "open", _full_disk_open, raising=False)
    target = os.path.join(str(tmp_path), f"{name}.pth")
    with pytest.raises(OSError, match="No space left") as error:
        checkpointer.save(name, iteration=5)
    monkeypatch.undo()

    assert target in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth"]  # no .tmp
    assert Path(old).read_bytes() == old_bytes
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert _checkpointer(tmp_path).resume_or_load("", resume=True) == {"iteration": 2}
