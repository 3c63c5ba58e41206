"""The texture schedule of ``engine.train_model`` (MODEL.MULTITASK.TEXTURE_PHASE_ITERS > 0) on a
tiny synthetic multi-task set: 2 + 2 iterations of the quickstart config with small heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _engine_fakes import engine_test_env, uper_logs  # noqa: F401

from uper_parsing.config import get_cfg
from uper_parsing.data import DatasetCatalog, SyntheticParams, register_synthetic_multitask
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.data.datasets.synthetic import prepare_synthetic_scenes
from uper_parsing.engine import train_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/quickstart/unified_parsing_R18_synthetic.yaml"
PREFIX = "synthetic_phases_tiny"
PARAMS = SyntheticParams(seed=5, image_size=64, num_train=12, num_val=4, formats=("broden",))
TEXTURE = "heads.texture."


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phases_datasets")
    prepare_synthetic_scenes(root / PREFIX, PARAMS)
    if f"{PREFIX}_multitask_train" not in DatasetCatalog:
        register_synthetic_multitask(PREFIX, params=PARAMS)
    return root


@pytest.fixture
def tiny_data(tiny_root, monkeypatch) -> None:
    monkeypatch.setenv(DATASETS_ENV, str(tiny_root))


def _cfg(out: Path, **changes):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    opts = {
        "DATASETS.TRAIN": (f"{PREFIX}_multitask_train",),
        "DATASETS.TEST": (f"{PREFIX}_multitask_val",),
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": 16,
        "MODEL.MULTITASK.TEXTURE_CONVS_DIM": 16,
        "MODEL.MULTITASK.TEXTURE_PHASE_ITERS": 2,
        "INPUT.RESIZE_SCALE": [128, 64],
        "INPUT.CROP.SIZE": [48, 48],
        "INPUT.MIN_SIZE_TEST": 64,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.MAX_ITER": 2,
        "SOLVER.CHECKPOINT_PERIOD": 1000,
        "DATALOADER.NUM_WORKERS": 0,
        "OUTPUT_DIR": str(out),
        **changes,
    }
    cfg.merge_from_list([x for kv in opts.items() for x in (kv[0], repr(kv[1]))])
    cfg.freeze()
    return cfg


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def _loss_iterations(metrics: Path, key: str) -> list[int]:
    lines = [json.loads(line) for line in metrics.open()]
    return [line["iteration"] for line in lines if key in line]


def test_texture_phase_trains_the_texture_head_alone_from_the_first_phase(tiny_data, tmp_path):
    results, model = train_model(_cfg(tmp_path), resume=False)

    first = _model_state(tmp_path / "first_phase/model_final.pth")
    final_file = torch.load(tmp_path / "model_final.pth", weights_only=True)
    final = final_file["model"]
    assert not [k for k in first if k.startswith(TEXTURE)]  # the first phase has no texture head
    assert {k for k in final if not k.startswith(TEXTURE)} == set(first)
    for key, value in first.items():  # loaded from the first phase and frozen (BN statistics too)
        assert torch.equal(final[key], value), key
    texture_params = [n for n, p in model.named_parameters() if n.startswith(TEXTURE)]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == texture_params
    assert len(final_file["optimizer"]["state"]) == len(texture_params)  # AdamW stepped them
    assert final_file["iteration"] == 1

    assert _loss_iterations(tmp_path / "first_phase/metrics.json", "loss_texture") == []
    assert _loss_iterations(tmp_path / "first_phase/metrics.json", "total_loss") == [1]
    assert _loss_iterations(tmp_path / "metrics.json", "loss_texture") == [1]
    assert _loss_iterations(tmp_path / "metrics.json", "loss_object") == []
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert {"object", "part", "material", "scene", "texture"} <= set(results)
    assert json.loads((tmp_path / "results.json").read_text())["texture"] == results["texture"]


def test_resume_after_the_first_phase_does_not_train_it_again(tiny_data, tmp_path, uper_logs):  # noqa: F811
    train_model(_cfg(tmp_path), resume=False)
    uninterrupted = _model_state(tmp_path / "model_final.pth")
    first_files = sorted((tmp_path / "first_phase").iterdir())
    first_bytes = {p.name: p.read_bytes() for p in first_files if p.suffix in {".pth", ".json"}}
    # killed after the first phase, before the texture phase saved anything
    (tmp_path / "last_checkpoint").unlink()
    (tmp_path / "model_final.pth").unlink()

    train_model(_cfg(tmp_path), resume=True)
    assert any("First phase already trained" in r.getMessage() for r in uper_logs)
    assert sorted((tmp_path / "first_phase").iterdir()) == first_files
    assert {name: (tmp_path / "first_phase" / name).read_bytes() for name in first_bytes} == (
        first_bytes
    )
    resumed = _model_state(tmp_path / "model_final.pth")
    for key, value in uninterrupted.items():  # the same texture phase as without the kill
        assert torch.equal(resumed[key], value), key

    # a longer texture phase continues from the texture phase's last checkpoint
    uper_logs.clear()
    train_model(_cfg(tmp_path, **{"MODEL.MULTITASK.TEXTURE_PHASE_ITERS": 4}), resume=True)
    messages = [r.getMessage() for r in uper_logs]
    assert "Resuming training at iteration 2" in messages
    assert any("First phase already trained" in m for m in messages)
    assert _loss_iterations(tmp_path / "metrics.json", "loss_texture") == [1, 1, 3]
    assert (tmp_path / "first_phase/model_final.pth").read_bytes() == first_bytes["model_final.pth"]


def test_resume_skips_a_damaged_first_phase_checkpoint(tiny_data, tmp_path, uper_logs):  # noqa: F811
    """A truncated first-phase model_final is named in a warning and the newest good checkpoint
    (the period's, at the last iteration) counts as the finished first phase."""
    cfg = _cfg(tmp_path, **{"SOLVER.CHECKPOINT_PERIOD": 1})
    train_model(cfg, resume=False)
    final = tmp_path / "first_phase/model_final.pth"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    (tmp_path / "last_checkpoint").unlink()
    (tmp_path / "model_final.pth").unlink()

    train_model(cfg, resume=True)
    messages = [r.getMessage() for r in uper_logs]
    assert any(f"Cannot resume from {final}" in m for m in messages)
    assert any("First phase already trained" in m and "model_0000001.pth" in m for m in messages)
    assert (tmp_path / "model_final.pth").is_file()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("MODEL.MULTITASK.TEXTURE_TRAINING", "second_phase", "TEXTURE_TRAINING is 'second_phase'"),
        ("MODEL.MULTITASK.TASKS", ["object", "scene"], "has no 'texture'"),
        ("MODEL.META_ARCHITECTURE", "SemanticSegmentor", "cannot train its texture head alone"),
    ],
)
def test_texture_phase_rejects_configs_it_cannot_follow(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=f"TEXTURE_PHASE_ITERS 2 asks for .*{message}"):
        train_model(_cfg(tmp_path, **{key: value}), resume=False)
