import pytest

from uper_parsing.config import CfgNode, ConfigKeyError, configurable, get_cfg


def test_unknown_yaml_key_names_file_key_and_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigKeyError) as err:
        get_cfg().merge_from_file(str(path))
    msg = str(err.value)
    assert "SOLVER.BASE_LRR" in msg and str(path) in msg
    assert "SOLVER.BASE_LR," in msg  # the closest valid key comes first


def test_unknown_override_names_closest_key():
    with pytest.raises(
        ConfigKeyError, match=r"SOLVER\.MAX_ITERS.*closest valid keys: SOLVER\.MAX_ITER"
    ):
        get_cfg().merge_from_list(["SOLVER.MAX_ITERS", "3"])


def test_misspelt_group_suggests_by_leaf_name():
    with pytest.raises(ConfigKeyError, match=r"SOLVR\.MAX_ITER.*SOLVER\.MAX_ITER"):
        get_cfg().merge_from_list(["SOLVR.MAX_ITER", "3"])


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 7\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\nSOLVER:\n  MAX_ITER: 9\n')
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "child.yaml"))
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", "4"])
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH) == (0.5, 9, 4)


def test_every_shipped_config_loads():
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[2].glob("configs/**/*.yaml"))
    assert files
    for path in files:
        if path.name.startswith("Base-"):
            continue
        cfg = get_cfg()
        cfg.merge_from_file(str(path))  # raises on any unknown key
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES > 0


def test_every_default_key_has_a_comment():
    from pathlib import Path

    from uper_parsing.config import all_keys

    source = (Path(__file__).resolve().parents[2] / "uper_parsing/config/defaults.py").read_text()
    lines = source.splitlines()
    commented = set()
    for i, line in enumerate(lines):
        # a comment on the line itself or a comment block right above it
        has_comment = "#" in line or lines[i - 1].lstrip().startswith("#")
        if line.startswith("_C.") and has_comment:
            commented.add(line.split("=")[0].strip()[3:])
    for key in all_keys(get_cfg()):
        assert key in commented, f"{key} is declared without a comment"


class _Head:
    @configurable
    def __init__(self, *, num_classes: int, channels: int = 8):
        self.num_classes, self.channels = num_classes, channels

    @classmethod
    def from_config(cls, cfg: CfgNode):
        return {"num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}


def test_configurable_from_cfg_and_from_arguments():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    assert _Head(cfg).num_classes == 3
    assert _Head(cfg, channels=4).channels == 4  # extra keyword passes through
    head = _Head(num_classes=5, channels=2)
    assert (head.num_classes, head.channels) == (5, 2)
