"""Argument parser, default_setup, device fallback, results files and DefaultTrainer.test."""

import json
import os
import random

import numpy as np
import pytest
import torch
from _engine_fakes import FakeSegModel, FakeTrainer, engine_test_env, make_cfg  # noqa: F401

import uper_parsing.evaluation as evaluation
from uper_parsing.engine import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    resolve_device,
    write_results,
)
from uper_parsing.engine.train_loop import AMPTrainer


def test_argument_parser():
    args = default_argument_parser().parse_args(
        ["--config-file", "a.yaml", "--num-gpus", "2", "--resume", "SOLVER.BASE_LR", "0.1"]
    )
    assert args.config_file == "a.yaml" and args.num_gpus == 2 and args.resume
    assert not args.eval_only and args.num_machines == 1 and args.machine_rank == 0
    assert args.opts == ["SOLVER.BASE_LR", "0.1"]
    assert args.dist_url.startswith("tcp://127.0.0.1:")
    port = int(args.dist_url.rsplit(":", 1)[1])
    assert 2**15 <= port < 2**16
    assert default_argument_parser().parse_args([]).dist_url == args.dist_url  # stable per user


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without CUDA")
def test_resolve_device_falls_back_to_cpu_on_frozen_cfg():
    cfg = make_cfg("unused")
    cfg.MODEL.DEVICE = "cuda"
    cfg.freeze()
    assert resolve_device(cfg) == "cpu"
    assert cfg.MODEL.DEVICE == "cpu" and cfg.is_frozen()


def test_default_setup(tmp_path):
    config_file = tmp_path / "in.yaml"
    config_file.write_text("SOLVER:\n  BASE_LR: 0.5\n")
    cfg = make_cfg(tmp_path / "out", SEED=7)
    cfg.merge_from_file(str(config_file))
    cfg.freeze()
    args = default_argument_parser().parse_args(["--config-file", str(config_file)])
    default_setup(cfg, args)

    out = tmp_path / "out"
    written = cfg.clone()
    written.defrost()
    written.merge_from_file(str(out / "config.yaml"))
    assert written.SOLVER.BASE_LR == 0.5 and written.SEED == 7
    log = (out / "log.txt").read_text()
    assert "World size: 1" in log and "torch" in log and "BASE_LR: 0.5" in log
    # seeded with SEED + rank
    state = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    assert state == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_random_seed_is_logged(tmp_path):
    cfg = make_cfg(tmp_path, SEED=-1)
    default_setup(cfg, default_argument_parser().parse_args([]))
    assert "using random seed" in (tmp_path / "log.txt").read_text()


def test_write_results_atomic_json(tmp_path):
    path = tmp_path / "results.json"
    results = {"sem_seg": {"mIoU": np.float32(41.5), "IoU-wall": float("nan")}}
    write_results(results, str(path))
    loaded = json.loads(path.read_text())
    assert loaded["sem_seg"]["mIoU"] == 41.5 and np.isnan(loaded["sem_seg"]["IoU-wall"])
    assert os.listdir(tmp_path) == ["results.json"]


class _Evaluator:
    def __init__(self, name):
        self.name = name


class _TestTrainer(DefaultTrainer):
    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return [dataset_name]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return _Evaluator(dataset_name)


def _fake_inference(model, data_loader, evaluator):
    assert data_loader == [evaluator.name]
    return {"sem_seg": {"mIoU": float(len(evaluator.name))}}


def test_test_merges_results_over_datasets(monkeypatch):
    monkeypatch.setattr(evaluation, "inference_on_dataset", _fake_inference)
    model = FakeSegModel()
    cfg = make_cfg("unused", **{"DATASETS.TEST": ("a_val",)})
    assert _TestTrainer.test(cfg, model) == {"sem_seg": {"mIoU": 5.0}}

    cfg = make_cfg("unused", **{"DATASETS.TEST": ("a_val", "bb_val")})
    results = _TestTrainer.test(cfg, model)
    assert list(results) == ["a_val/sem_seg", "bb_val/sem_seg"]
    assert results["bb_val/sem_seg"] == {"mIoU": 6.0}

    given = [_Evaluator("a_val"), _Evaluator("bb_val")]
    assert _TestTrainer.test(cfg, model, evaluators=given) == results
    with pytest.raises(ValueError, match="2 test datasets"):
        _TestTrainer.test(cfg, model, evaluators=given[:1])


def test_amp_config_selects_amp_trainer(tmp_path):
    cfg = make_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "bfloat16"})
    trainer = FakeTrainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer)
    assert trainer._trainer.precision == torch.bfloat16
    assert "grad_scaler" not in trainer.checkpointer.checkpointables
    cfg = make_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "float8"})
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        FakeTrainer(cfg)
