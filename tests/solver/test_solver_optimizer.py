"""build_optimizer: parameter groups by kind, frozen parameters, backbone learning-rate factor."""

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from uper_parsing.config import get_cfg
from uper_parsing.solver import build_optimizer


class LayerNorm2d(nn.Module):
    """A norm defined outside torch.nn, recognised by its name."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 8, 3),  # frozen below
            FrozenBatchNorm2d(8),
            nn.SyncBatchNorm(8),
        )
        for p in self.backbone[2].parameters():
            p.requires_grad = False
        self.head = nn.Sequential(
            nn.Conv2d(8, 8, 1), nn.GroupNorm(2, 8), nn.LayerNorm(8), LayerNorm2d(8), nn.Linear(8, 4)
        )
        self.tied = self.head[4]  # the same Linear under a second name


def _cfg(optimizer="SGD"):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = optimizer
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 3e-5
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 2e-5
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.5
    if optimizer == "SGD":  # each optimizer's own keys: the other's are rejected when set
        cfg.SOLVER.MOMENTUM = 0.8
        cfg.SOLVER.NESTEROV = True
    if optimizer == "AdamW":
        cfg.SOLVER.BETAS = [0.8, 0.95]
    return cfg


def _hyper(optimizer):
    """{id(param): (lr, weight_decay)} over all groups, checking each param appears once."""
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in out, "a parameter is in two groups"
            out[id(p)] = (group["lr"], group["weight_decay"])
    return out


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_param_groups(name):
    net = Net()
    optimizer = build_optimizer(_cfg(name), net)
    hyper = _hyper(optimizer)
    bb, head = net.backbone, net.head
    expected = {
        bb[0].weight: (0.05, 1e-4),  # backbone conv weight: decay, lr x 0.5
        bb[1].weight: (0.05, 3e-5),  # BN: norm decay
        bb[1].bias: (0.05, 3e-5),
        bb[4].weight: (0.05, 3e-5),  # SyncBN
        head[0].weight: (0.1, 1e-4),
        head[0].bias: (0.1, 2e-5),  # bias decay
        head[1].weight: (0.1, 3e-5),  # GN
        head[1].bias: (0.1, 3e-5),
        head[2].weight: (0.1, 3e-5),  # LayerNorm
        head[3].bias: (0.1, 3e-5),  # a norm by name
        head[4].weight: (0.1, 1e-4),  # Linear
        head[4].bias: (0.1, 2e-5),
    }
    for param, value in expected.items():
        assert hyper[id(param)] == pytest.approx(value)
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert set(hyper) == trainable  # frozen conv left out, tied Linear once
    assert id(bb[2].weight) not in hyper
    assert len({(g["lr"], g["weight_decay"]) for g in optimizer.param_groups}) == len(
        optimizer.param_groups
    )
    if name == "SGD":
        assert isinstance(optimizer, torch.optim.SGD)
        assert optimizer.defaults["momentum"] == 0.8 and optimizer.defaults["nesterov"]
    else:
        assert isinstance(optimizer, torch.optim.AdamW)
        assert optimizer.defaults["betas"] == (0.8, 0.95)


def test_unknown_optimizer_and_all_frozen():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg("Adagrad"), Net())
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(_cfg(), frozen)
