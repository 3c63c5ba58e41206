import pytest
import torch
import torch.nn.functional as F

from uper_parsing.layers import ShapeSpec
from uper_parsing.modeling import FCNHead, build_model
from uper_parsing.modeling.sem_seg_heads import sem_seg_cross_entropy

K = 4
WEIGHTS = [0.5, 2.0, 1.0, 3.0]


def _logits_and_targets():
    gen = torch.Generator().manual_seed(1234)
    logits = torch.randn(2, K, 5, 7, generator=gen) * 3
    targets = torch.randint(0, K, (2, 19, 27), generator=gen)
    targets[0, :6] = 255
    targets[1, :, -4:] = 255
    return logits, targets


def _reference(logits, targets, weight=None):
    """Independent computation: upsample by hand, then torch's cross-entropy (mean reduction)."""
    up = F.interpolate(logits, size=(19, 27), mode="bilinear", align_corners=False)
    return F.cross_entropy(up, targets, weight=weight, ignore_index=255)


@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("loss_weight", [1.0, 0.4])
def test_head_loss_golden(weights, loss_weight):
    logits, targets = _logits_and_targets()
    head = FCNHead(
        {"res5": ShapeSpec(channels=8, stride=32)},
        num_classes=K,
        class_weights=weights,
        loss_weight=loss_weight,
    )
    losses = head.losses(logits, targets)
    weight = None if weights is None else torch.tensor(WEIGHTS)
    expected = _reference(logits, targets, weight) * loss_weight
    torch.testing.assert_close(losses["loss_sem_seg"], expected)
    if weights is None and loss_weight == 1.0:  # pins the fixed-seed value itself
        assert losses["loss_sem_seg"].item() == pytest.approx(expected.item(), rel=1e-6)
        assert 0.0 < expected.item() < 10.0


def test_loss_of_fully_ignored_targets_is_zero_not_nan():
    logits = torch.randn(1, K, 3, 3, requires_grad=True)
    targets = torch.full((1, 6, 6), 255)
    loss = sem_seg_cross_entropy(logits, targets, ignore_value=255, class_weights=torch.ones(K))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_aux_loss_is_named_loss_aux_and_weighted(tiny_cfg, batched_inputs):
    torch.manual_seed(0)
    cfg = tiny_cfg("PSPHead", aux=True)
    model = build_model(cfg)
    inputs = batched_inputs(with_labels=True)
    model.train()
    losses = model(inputs)
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    assert model.aux_head.loss_weight == pytest.approx(0.4)
    # The same numbers, computed outside the model (BN in train mode, as in the forward)
    images, sizes = model.preprocess_image(inputs)
    targets = model.preprocess_targets(inputs, sizes)
    features = model.backbone(images)
    aux_logits = model.aux_head.layers(features)
    main_logits = model.sem_seg_head.layers(features)
    up = F.interpolate(aux_logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        losses["loss_aux"], 0.4 * F.cross_entropy(up, targets, ignore_index=255)
    )
    up = F.interpolate(main_logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        losses["loss_sem_seg"], F.cross_entropy(up, targets, ignore_index=255)
    )
