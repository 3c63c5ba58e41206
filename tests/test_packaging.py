"""Packaging: shipped configs found by name (``model_zoo``) in the checkout, and a built wheel that
carries the configs and the console commands, its configs' ``_BASE_`` chains resolving from the
installed location."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from uper_parsing import model_zoo

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_CONFIGS = sorted(
    p.relative_to(ROOT / "configs").as_posix() for p in ROOT.glob("configs/**/*.yaml")
)


def test_every_checkout_config_is_found_by_name():
    assert model_zoo.config_root() == ROOT / "configs"
    assert model_zoo.list_configs() == CHECKOUT_CONFIGS
    for name in CHECKOUT_CONFIGS:
        assert model_zoo.get_config_file(name) == str(ROOT / "configs" / name)
    # a repository path works as well
    name = "ade20k/upernet_R50_bs16_160k.yaml"
    assert model_zoo.get_config_file(f"configs/{name}") == str(ROOT / "configs" / name)


def test_get_config_follows_base_chains():
    cfg = model_zoo.get_config("ade20k/upernet_R50_bs16_160k.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "UPerNetHead"  # the file itself
    assert cfg.TEST.PAD_TO_DIVISIBILITY is False  # from its _BASE_, Base-ADE20K-SemSeg.yaml
    panoptic = model_zoo.get_config("quickstart/panoptic_fpn_R18_synthetic.yaml")
    assert panoptic.MODEL.META_ARCHITECTURE == "PanopticFPN"  # ../coco_panoptic/Base-...


def test_unknown_config_names_the_closest():
    with pytest.raises(FileNotFoundError, match=r"'ade20k/upernet_R50_bs16_16k.yaml' in .*configs; "
                       r"closest: ade20k/upernet_R50_bs16_160k.yaml"):  # fmt: skip
        model_zoo.get_config_file("ade20k/upernet_R50_bs16_16k.yaml")


def _build_wheel(out: Path) -> Path:
    """A wheel of a copy of the sources (the build leaves build/ and egg-info where it runs)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("uper_parsing", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    cmd = [uv, "build", "--wheel", "--out-dir", str(out / "dist"), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = (out / "dist").glob("uper_parsing-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_ships_configs_and_commands(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
        archive.extractall(tmp_path / "site")
    assert {f"uper_parsing/configs/{name}" for name in CHECKOUT_CONFIGS} <= names
    assert "uper_parsing/model_zoo.py" in names and "uper_parsing/cli/train.py" in names
    assert "[console_scripts]" in scripts
    assert "uper-train = uper_parsing.cli.train:invoke_main" in scripts
    assert "uper-demo = uper_parsing.cli.demo:main" in scripts

    # the installed copy finds its own configs, and their _BASE_ chains resolve there
    probe = (
        "from uper_parsing import model_zoo\n"
        "print(model_zoo.__file__)\n"
        "print(model_zoo.config_root())\n"
        "cfg = model_zoo.get_config('quickstart/panoptic_fpn_R18_synthetic.yaml')\n"
        "print(cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.ROI_HEADS.NUM_CLASSES)\n"
    )
    site = tmp_path / "site"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
        capture_output=True, text=True, timeout=300,
    ).stdout.split("\n")  # fmt: skip
    assert out[0] == str(site / "uper_parsing" / "model_zoo.py")
    assert out[1] == str(site / "uper_parsing" / "configs")
    assert out[2] == "PanopticFPN 5"
