"""Predictor: from a config or from a checkpoint alone, for every task family; the trainer's
checkpoints carry the config and the metadata a fresh process needs to predict and draw."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _predictor_helpers import ROOT, prepare_tiny_sets, tiny_cfg

from uper_parsing.checkpoint import Checkpointer, read_checkpoint_record
from uper_parsing.config import get_cfg
from uper_parsing.data import DatasetCatalog, MetadataCatalog, read_image
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.data.mappers import MAPPER_REGISTRY
from uper_parsing.engine import DefaultPredictor, DefaultTrainer, Predictor
from uper_parsing.engine.predictor import write_prediction_pictures
from uper_parsing.tasks import TASK_REGISTRY

FAMILIES = ("sem_seg", "coco_panoptic_seg", "multitask")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{family: (trainer, checkpoint path, a val image path)}: each family's tiny model saved as
    ``model_final.pth`` by its DefaultTrainer's checkpointer (random weights)."""
    root = tmp_path_factory.mktemp("predictor")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATASETS_ENV, str(root / "datasets"))
        prepare_tiny_sets(root / "datasets")
        out = {}
        for family in FAMILIES:
            torch.manual_seed(0)
            trainer = DefaultTrainer(tiny_cfg(family, root / family))
            trainer.checkpointer.save("model_final")
            image = DatasetCatalog.get(trainer.cfg.DATASETS.TEST[0])[0]["file_name"]
            out[family] = (trainer, root / family / "model_final.pth", image)
        yield out


def _same(a, b, where: str = "outputs") -> None:
    """Assert that two nested output structures are equal, tensors exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__"):
        _same(vars(a), vars(b), where)
    else:
        assert a == b, where


@pytest.mark.parametrize("family", FAMILIES)
def test_trainer_checkpoints_carry_config_and_metadata(trained, family):
    trainer, path, _ = trained[family]
    config, metadata = read_checkpoint_record(str(path))
    record = TASK_REGISTRY[family]
    train_metadata = MetadataCatalog.get(trainer.cfg.DATASETS.TRAIN[0])
    assert metadata == record.stored_metadata(train_metadata)
    assert set(metadata) == {*record.metadata_keys, "evaluator_type"}  # every key the family needs
    cfg = get_cfg().merge_from_yaml_text(config, "test")
    assert cfg.dump() == trainer.cfg.dump()
    if family == "multitask":  # the class counts set-up derived from the metadata
        assert len(train_metadata.object_classes) == cfg.MODEL.MULTITASK.NUM_OBJECTS
        assert train_metadata.object_parts == cfg.MODEL.MULTITASK.OBJECT_PARTS


@pytest.mark.parametrize("family", FAMILIES)
def test_from_checkpoint_predicts_and_draws_as_the_trained_model(trained, family):
    trainer, path, image = trained[family]
    expected = Predictor(trainer.cfg, model=trainer.model)(image)
    predictor = Predictor.from_checkpoint(str(path), device="cpu")
    assert predictor.family is TASK_REGISTRY[family]
    assert predictor.metadata.name.endswith("(stored metadata)")
    outputs = predictor(image)
    _same(outputs, expected)
    picture = predictor.draw(image, outputs)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[1] > 2 * 64


@pytest.mark.parametrize("family", FAMILIES)
def test_folded_predictor_predicts_what_the_trained_model_does(trained, family):
    trainer, path, image = trained[family]
    expected = Predictor(trainer.cfg, model=trainer.model)(image)
    folded = Predictor.from_checkpoint(str(path), overrides=["TEST.FOLD_BATCH_NORM", "auto"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.modules())
    outputs = folded(image)
    for key in ("sem_seg", "object", "material", "scene"):  # the dense / image-level scores
        if key in expected:
            torch.testing.assert_close(outputs[key], expected[key], rtol=1e-4, atol=1e-4)
    if "panoptic_seg" in expected:  # the same segments, to the odd boundary pixel
        same = (outputs["panoptic_seg"][0] == expected["panoptic_seg"][0]).float().mean()
        assert same > 0.99


@pytest.mark.parametrize("family", FAMILIES)
def test_the_predictor_resizes_through_the_real_test_mapper(trained, family):
    trainer, path, image = trained[family]
    predictor = Predictor.from_checkpoint(str(path))
    mapper_cls = MAPPER_REGISTRY.get(trainer.cfg.INPUT.DATASET_MAPPER_NAME)
    assert type(predictor.mapper) is mapper_cls and not predictor.mapper.is_train
    from_file = mapper_cls(trainer.cfg, False)({"file_name": image})
    in_memory = predictor.mapper({"image": predictor.read(image)})
    assert torch.equal(in_memory["image"], from_file["image"])
    assert (in_memory["height"], in_memory["width"]) == (from_file["height"], from_file["width"])


@pytest.mark.parametrize("family", FAMILIES)
def test_pictures_of_a_dataset_are_drawn_by_the_family_record(trained, family, tmp_path):
    trainer, _, _ = trained[family]
    name = trainer.cfg.DATASETS.TEST[0]
    paths = write_prediction_pictures(trainer.cfg, trainer.model, name, str(tmp_path), 1)
    assert len(paths) == 1
    picture = read_image(paths[0])
    assert picture.shape[1] > 3 * 64  # [image | prediction | ground truth]


def test_images_in_either_channel_order_or_by_path_give_the_same_outputs(trained):
    trainer, path, image = trained["sem_seg"]
    predictor = Predictor.from_checkpoint(str(path))
    rgb = read_image(image, format="RGB")
    by_path = predictor(image)["sem_seg"]
    assert torch.equal(predictor(rgb, format="RGB")["sem_seg"], by_path)
    assert torch.equal(predictor(rgb[:, :, ::-1].copy(), format="BGR")["sem_seg"], by_path)
    assert torch.equal(predictor(rgb)["sem_seg"], by_path)  # default: INPUT.FORMAT (RGB here)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor(rgb.astype(np.float32))
    assert DefaultPredictor is Predictor  # detectron2's name, DefaultPredictor(cfg)


def test_confidence_threshold_sets_the_instance_keys_or_is_rejected(trained):
    _, path, _ = trained["coco_panoptic_seg"]
    predictor = Predictor.from_checkpoint(str(path), confidence_threshold=0.7)
    assert predictor.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.7
    assert predictor.cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH == 0.7
    _, path, _ = trained["sem_seg"]
    with pytest.raises(ValueError, match="confidence_threshold.*sem_seg model"):
        Predictor.from_checkpoint(str(path), confidence_threshold=0.7)


def _old_checkpoint(trainer, folder: Path) -> tuple[Path, Path]:
    """The trained model saved as before checkpoints carried config and metadata, and its config
    file, whose datasets are named but registered nowhere."""
    Checkpointer(trainer.model, str(folder)).save("old")
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN = ("_predictor_test_never_registered_train",)
    cfg.DATASETS.TEST = ("_predictor_test_never_registered_val",)
    config = folder / "old.yaml"
    config.write_text(cfg.dump())
    return folder / "old.pth", config


def test_an_old_checkpoint_names_what_to_pass(trained, tmp_path):
    trainer, _, image = trained["sem_seg"]
    old, config = _old_checkpoint(trainer, tmp_path)
    with pytest.raises(ValueError, match="stores no config.*pass config="):
        Predictor.from_checkpoint(str(old))
    with pytest.raises(ValueError, match="stores no metadata.*DATASETS.TEST.*pass config="):
        Predictor.from_checkpoint(str(old), config=str(config))
    # with a config whose DATASETS.TEST is registered, the old checkpoint runs and draws
    predictor = Predictor.from_checkpoint(str(old), config=trainer.cfg)
    assert predictor.metadata.name == trainer.cfg.DATASETS.TEST[0]
    _same(predictor(image), Predictor(trainer.cfg, model=trainer.model)(image))


_FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import torch
    from uper_parsing.data import DatasetCatalog, MetadataCatalog
    from uper_parsing.engine import Predictor

    results = {}
    for family, path, image in zip(*[iter(sys.argv[2:-2])] * 3):
        predictor = Predictor.from_checkpoint(path, device="cpu")
        for name in [*predictor.cfg.DATASETS.TRAIN, *predictor.cfg.DATASETS.TEST]:
            assert name not in DatasetCatalog, name  # nothing of the training run is known
        outputs = predictor(image)
        picture = predictor.draw(image, outputs)
        results[family] = {"outputs": outputs, "family": predictor.family.name,
                           "picture": tuple(picture.shape)}
    errors = []
    for kwargs in ({}, {"config": sys.argv[-1]}):
        try:
            Predictor.from_checkpoint(sys.argv[-2], **kwargs)
        except ValueError as err:
            errors.append(str(err))
    results["errors"] = errors
    torch.save(results, sys.argv[1])
    """
)


@pytest.mark.slow  # a fresh interpreter imports torch and builds three models (about 30 s)
def test_from_checkpoint_in_a_fresh_process_with_nothing_registered(trained, tmp_path):
    args, expected = [], {}
    for family, (trainer, path, image) in trained.items():
        args += [family, str(path), image]
        expected[family] = Predictor(trainer.cfg, model=trainer.model)(image)
    old, config = _old_checkpoint(trained["sem_seg"][0], tmp_path)
    result = tmp_path / "result.pt"
    empty = tmp_path / "no_datasets"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != DATASETS_ENV}
    env[DATASETS_ENV] = str(empty)
    cmd = [sys.executable, "-c", _FRESH_PROCESS, str(result), *args, str(old), str(config)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = torch.load(result, weights_only=False)
    for family in FAMILIES:
        assert results[family]["family"] == family
        _same(results[family]["outputs"], expected[family], family)
        assert results[family]["picture"][2] == 3
    no_config, no_metadata = results["errors"]
    assert "stores no config" in no_config and "config=" in no_config
    assert "stores no metadata" in no_metadata and "DATASETS.TEST" in no_metadata
    assert not any(empty.iterdir())  # nothing was generated
