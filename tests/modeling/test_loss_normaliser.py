"""MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE against a numpy oracle of mmseg 1.x's cross_entropy
(mmseg/models/losses/cross_entropy_loss.py + utils.weight_reduce_loss)."""

import numpy as np
import pytest
import torch

from uper_parsing.layers import ShapeSpec
from uper_parsing.modeling import FCNHead, build_model
from uper_parsing.modeling.sem_seg_heads import sem_seg_cross_entropy

K = 4
WEIGHTS = [0.5, 2.0, 1.0, 3.0]


def mmseg_cross_entropy(logits, label, *, class_weight=None, avg_non_ignore, ignore_index=255):
    """mmseg's cross_entropy(reduction='mean') in numpy: per-pixel -log softmax (times the class
    weight of the label, 0 where ignored), summed, divided by avg_factor + float32 eps."""
    logits = logits.astype(np.float64)
    log_prob = logits - logits.max(1, keepdims=True)
    log_prob = log_prob - np.log(np.exp(log_prob).sum(1, keepdims=True))
    valid = label != ignore_index
    safe = np.where(valid, label, 0)
    nll = -np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
    weight = np.ones(K) if class_weight is None else np.asarray(class_weight, np.float64)
    loss = np.where(valid, nll * weight[safe], 0.0)
    if class_weight is None:
        avg_factor = label.size - (~valid).sum() if avg_non_ignore else label.size
    elif avg_non_ignore:
        # mmseg looks up every pixel's label weight first (an IndexError where a pixel is ignored,
        # issue #3734), then zeroes the ignored ones: this is the value it means
        avg_factor = np.where(valid, weight[safe], 0.0).sum()
    else:
        avg_factor = weight[label].sum()  # IndexError on an ignored pixel, as in mmseg
    return loss.sum() / (avg_factor + np.finfo(np.float32).eps)


def _sample(ignored: bool = True):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, K, 9, 11, generator=gen) * 3
    targets = torch.randint(0, K, (2, 9, 11), generator=gen)
    if ignored:
        targets[0, :4] = 255
        targets[1, :, -3:] = 255
    return logits, targets


@pytest.mark.parametrize(
    "weights, avg_non_ignore, ignored",
    [
        (None, False, True),
        (None, True, True),
        (WEIGHTS, True, True),
        (WEIGHTS, False, False),  # mmseg's only defined case of weights without avg_non_ignore
        (None, False, False),
    ],
)
def test_loss_equals_mmseg_oracle(weights, avg_non_ignore, ignored):
    logits, targets = _sample(ignored)
    weight = None if weights is None else torch.tensor(weights)
    ours = sem_seg_cross_entropy(
        logits, targets, ignore_value=255, class_weights=weight, avg_non_ignore=avg_non_ignore
    )
    expected = mmseg_cross_entropy(
        logits.numpy(), targets.numpy(), class_weight=weights, avg_non_ignore=avg_non_ignore
    )
    assert ours.item() == pytest.approx(expected, rel=2e-6)


def test_all_pixels_divisor_is_the_valid_mean_scaled():
    logits, targets = _sample()
    mean = sem_seg_cross_entropy(logits, targets, ignore_value=255)
    over_all = sem_seg_cross_entropy(logits, targets, ignore_value=255, avg_non_ignore=False)
    valid = int((targets != 255).sum())
    assert valid < targets.numel()
    torch.testing.assert_close(over_all, mean * valid / targets.numel())


def test_class_weights_without_avg_non_ignore_and_ignored_pixels_is_an_error():
    logits, targets = _sample()
    with pytest.raises(IndexError):  # what mmseg does (issue #3734)
        mmseg_cross_entropy(
            logits.numpy(), targets.numpy(), class_weight=WEIGHTS, avg_non_ignore=False
        )
    with pytest.raises(ValueError, match="LOSS_AVG_NON_IGNORE False.*issue #3734"):
        sem_seg_cross_entropy(
            logits,
            targets,
            ignore_value=255,
            class_weights=torch.tensor(WEIGHTS),
            avg_non_ignore=False,
        )


def test_fully_ignored_targets_give_zero_with_a_gradient():
    logits = torch.randn(1, K, 3, 3, requires_grad=True)
    loss = sem_seg_cross_entropy(
        logits, torch.full((1, 6, 6), 255), ignore_value=255, avg_non_ignore=False
    )
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().sum() == 0


def test_head_passes_the_normaliser():
    logits, targets = _sample()
    head = FCNHead(
        {"res5": ShapeSpec(channels=8, stride=32)},
        num_classes=K,
        loss_weight=0.4,
        loss_avg_non_ignore=False,
    )
    expected = 0.4 * mmseg_cross_entropy(logits.numpy(), targets.numpy(), avg_non_ignore=False)
    assert head.losses(logits, targets)["loss_sem_seg"].item() == pytest.approx(expected, rel=2e-6)


def test_key_reaches_the_main_and_the_auxiliary_head(tiny_cfg, batched_inputs):
    cfg = tiny_cfg("FCNHead", aux=True)
    inputs = batched_inputs(with_labels=True)
    losses = {}
    for avg_non_ignore in (True, False):
        cfg.MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE = avg_non_ignore
        torch.manual_seed(0)
        model = build_model(cfg).train()
        assert model.sem_seg_head.loss_avg_non_ignore is avg_non_ignore
        assert model.aux_head.loss_avg_non_ignore is avg_non_ignore
        torch.manual_seed(1)
        losses[avg_non_ignore] = model(inputs)
    targets = model.preprocess_targets(inputs, [tuple(x["image"].shape[-2:]) for x in inputs])
    share = float((targets != 255).sum()) / targets.numel()  # padding counts as ignored
    for name in ("loss_sem_seg", "loss_aux"):
        torch.testing.assert_close(losses[False][name], losses[True][name] * share)
