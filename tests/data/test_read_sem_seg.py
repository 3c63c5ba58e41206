import cv2
import numpy as np
import pytest

from uper_parsing.data import read_image, read_sem_seg

META = {"stuff_classes": ["a", "b", "c"], "ignore_label": 255}


def _write(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_identity_mapping(tmp_path):
    label = np.array([[0, 1], [2, 255]], np.uint8)
    out = read_sem_seg(_write(tmp_path / "l.png", label), META)
    assert out.dtype == np.uint8 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, label)


def test_reduce_zero_label(tmp_path):
    label = np.array([[0, 1], [3, 255]], np.uint8)
    out = read_sem_seg(_write(tmp_path / "l.png", label), {**META, "reduce_zero_label": True})
    np.testing.assert_array_equal(out, [[255, 0], [2, 255]])


def test_label_id_map_unmapped_become_ignore(tmp_path):
    label = np.array([[7, 9], [11, 300]], np.uint16)
    meta = {**META, "label_id_map": {7: 0, 9: 2, 300: 1}}
    out = read_sem_seg(_write(tmp_path / "l.png", label), meta)
    np.testing.assert_array_equal(out, [[0, 2], [255, 1]])


def test_bad_value_names_file_and_value(tmp_path):
    label = np.array([[0, 5], [9, 255]], np.uint8)
    path = _write(tmp_path / "bad.png", label)
    with pytest.raises(ValueError) as info:
        read_sem_seg(path, META)
    message = str(info.value)
    assert str(path) in message and "5" in message and "9" in message and "0..2" in message


def test_bad_value_after_reduce_zero_label(tmp_path):
    path = _write(tmp_path / "bad.png", np.array([[4, 1]], np.uint8))
    with pytest.raises(ValueError, match=r"4->3"):
        read_sem_seg(path, {**META, "reduce_zero_label": True})


def test_size_mismatch(tmp_path):
    path = _write(tmp_path / "l.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError) as info:
        read_sem_seg(path, META, expected_hw=(6, 4))
    assert str(path) in str(info.value) and "(4, 6)" in str(info.value)
    assert "(6, 4)" in str(info.value)


def test_missing_and_multichannel_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_sem_seg(tmp_path / "nope.png", META)
    path = _write(tmp_path / "rgb.png", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        read_sem_seg(path, META)


def test_read_image_formats_and_missing(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "im.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(path, format="BGR"), rgb[..., ::-1])
    with pytest.raises(FileNotFoundError, match="absent.jpg"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ValueError):
        read_image(path, format="HSV")
