import numpy as np
import pytest
from _data_helpers import write_pair

from uper_parsing.data import DatasetCatalog, MetadataCatalog, register_sem_seg


def _dataset(root, n=3, hw=(20, 30)):
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
        write_pair(root, f"im{i}", image, rng.integers(0, 3, hw, dtype=np.uint8), ".jpg")
    return root / "images", root / "labels"


def test_register_and_load(tmp_path, fresh_name):
    images, labels = _dataset(tmp_path)
    register_sem_seg(
        fresh_name,
        image_root=images,
        label_root=labels,
        metadata={"stuff_classes": ["a", "b", "c"]},
    )
    dicts = DatasetCatalog.get(fresh_name)
    assert [d["image_id"] for d in dicts] == ["im0", "im1", "im2"]
    assert dicts[0]["file_name"] == str(images / "im0.jpg")
    assert dicts[0]["sem_seg_file_name"] == str(labels / "im0.png")
    assert (dicts[0]["height"], dicts[0]["width"]) == (20, 30)
    meta = MetadataCatalog.get(fresh_name)
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert len(meta.stuff_colors) == 3 and len(set(meta.stuff_colors)) == 3
    assert meta.reduce_zero_label is False and meta.image_root == str(images)


def test_registration_touches_no_disk(tmp_path, fresh_name):
    register_sem_seg(
        fresh_name,
        image_root=tmp_path / "x",
        label_root=tmp_path / "y",
        metadata={"stuff_classes": ["a"]},
    )
    with pytest.raises(FileNotFoundError, match="x"):
        DatasetCatalog.get(fresh_name)


def test_missing_label_and_image_named(tmp_path, fresh_name):
    images, labels = _dataset(tmp_path)
    (labels / "im1.png").unlink()
    meta = {"stuff_classes": ["a", "b", "c"]}
    register_sem_seg(fresh_name, image_root=images, label_root=labels, metadata=meta)
    with pytest.raises(ValueError, match="im1.png"):
        DatasetCatalog.get(fresh_name)
    (images / "im1.jpg").unlink()
    (images / "im2.jpg").unlink()
    with pytest.raises(ValueError, match="im2.jpg"):
        DatasetCatalog.get(fresh_name)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"stuff_classes": []}, "non-empty"),
        ({"stuff_classes": ["a", "b"], "stuff_colors": [(1, 2, 3)]}, "stuff_colors"),
        ({"stuff_classes": ["a", "b"], "label_id_map": {5: 2}}, "5 -> 2"),
        ({"stuff_classes": ["a"], "label_id_map": {1: 0}, "reduce_zero_label": True}, "both"),
        ({"stuff_classes": ["a", "b"], "ignore_label": 1}, "ignore_label"),
    ],
)
def test_metadata_validation(tmp_path, fresh_name, metadata, message):
    with pytest.raises(ValueError, match=message):
        register_sem_seg(fresh_name, image_root=tmp_path, label_root=tmp_path, metadata=metadata)
    assert fresh_name not in DatasetCatalog
