import pickle
from pathlib import Path

import pytest

import uper_parsing.data  # noqa: F401  (registers the builtin datasets)
from uper_parsing.data import DatasetCatalog, Metadata, MetadataCatalog
from uper_parsing.data.datasets import DATASETS_ENV


def test_register_get_list_remove(fresh_name):
    DatasetCatalog.register(fresh_name, lambda: [{"file_name": "a.jpg"}])
    assert fresh_name in DatasetCatalog.list()
    assert DatasetCatalog.get(fresh_name) == [{"file_name": "a.jpg"}]
    DatasetCatalog.remove(fresh_name)
    assert fresh_name not in DatasetCatalog.list()


def test_register_twice_is_an_error(fresh_name):
    DatasetCatalog.register(fresh_name, list)
    with pytest.raises(ValueError, match="already registered"):
        DatasetCatalog.register(fresh_name, list)


def test_register_needs_callable(fresh_name):
    with pytest.raises(TypeError):
        DatasetCatalog.register(fresh_name, [1, 2])


def test_get_unknown_lists_available_names():
    with pytest.raises(KeyError) as info:
        DatasetCatalog.get("no_such_dataset")
    message = str(info.value)
    assert "no_such_dataset" in message
    assert "ade20k_sem_seg_train" in message and "synthetic_scenes_sem_seg_val" in message


def test_metadata_set_get_and_conflicts():
    meta = Metadata("toy")
    meta.set(stuff_classes=["a", "b"], ignore_label=255)
    meta.ignore_label = 255  # same value: fine
    assert meta.stuff_classes == ["a", "b"]
    assert meta.get("ignore_label") == 255 and meta.get("missing", 7) == 7
    assert meta.as_dict() == {"stuff_classes": ["a", "b"], "ignore_label": 255, "name": "toy"}
    with pytest.raises(ValueError, match="ignore_label"):
        meta.set(ignore_label=0)
    with pytest.raises(AttributeError) as info:
        _ = meta.thing_classes
    assert "toy" in str(info.value) and "thing_classes" in str(info.value)


def test_metadata_catalog_returns_same_object(fresh_name):
    MetadataCatalog.get(fresh_name).set(x=1)
    assert MetadataCatalog.get(fresh_name).x == 1


def test_lazy_metadata_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    meta = MetadataCatalog.get("ade20k_sem_seg_val")
    assert meta.image_root == str(tmp_path / "ADEChallengeData2016/images/validation")
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path / "other"))
    assert meta.sem_seg_root.startswith(str(tmp_path / "other"))
    clone = pickle.loads(pickle.dumps(meta))
    assert clone.as_dict() == meta.as_dict()


def test_builtin_ade20k_metadata():
    meta = MetadataCatalog.get("ade20k_sem_seg_train")
    assert len(meta.stuff_classes) == len(meta.stuff_colors) == 150
    assert meta.stuff_classes[:3] == ["wall", "building", "sky"]
    assert meta.stuff_colors[0] == (120, 120, 120)
    assert meta.reduce_zero_label and meta.ignore_label == 255
    assert meta.evaluator_type == "sem_seg"


def test_builtin_ade20k_resolves_root_at_load_time(monkeypatch, tmp_path):
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        DatasetCatalog.get("ade20k_sem_seg_val")
    assert list(Path(tmp_path).iterdir()) == []  # loading an absent dataset writes nothing
