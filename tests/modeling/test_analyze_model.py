import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "analyze_model.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("analyze_model", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_analyze_model_prints_params_and_flops(capsys):
    tool = _load_tool()
    overrides = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NORM", "BN"]
    overrides += ["MODEL.SEM_SEG_HEAD.NAME", "FCNHead", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"]
    overrides += ["MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "MODEL.AUX_HEAD.ENABLED", "True"]
    tool.main(["--flops", "--input-size", "64", "96", *overrides])
    out = capsys.readouterr().out
    lines = out.splitlines()
    total = 11_176_512 + (512 * 32 * 9 + 64 + 32 * 9 * 32 + 64 + 32 * 5 + 5)
    total += 256 * 256 * 9 + 512 + 256 * 5 + 5
    assert lines[0] == f"parameters: {total:,} total, {total:,} trainable"
    assert lines[1].split()[:2] == ["backbone", "11,176,512"]
    assert [line.split()[0] for line in lines[2:4]] == ["sem_seg_head", "aux_head"]
    assert lines[4].startswith("flops at 64x96:") and float(lines[4].split()[-2]) > 0


def test_analyze_model_counts_flops_of_a_unified_parser(capsys, monkeypatch, tmp_path):
    """The parser returns no ``sem_seg``: every output tensor is traced (object ... texture)."""
    monkeypatch.setenv("UPER_PARSING_DATASETS", str(tmp_path))  # metadata only, nothing written
    tool = _load_tool()
    config = TOOL.parents[1] / "configs" / "quickstart" / "unified_parsing_R18_synthetic.yaml"
    overrides = ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "16"]
    overrides += ["MODEL.MULTITASK.TEXTURE_CONVS_DIM", "8"]
    overrides += ["MODEL.MULTITASK.TEXTURE_NUM_CONVS", "1"]
    tool.main(["--config-file", str(config), "--flops", "--input-size", "64", "96", *overrides])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["backbone", "trunk", "heads"]
    flops = {line.split()[0]: float(line.split()[-2]) for line in lines[5:]}
    assert lines[4].startswith("flops at 64x96:") and float(lines[4].split()[-2]) > 0
    assert set(flops) == {"backbone", "trunk", "heads"} and flops["backbone"] > 0
