import logging

import pytest
import torch

from uper_parsing.layers import resize_impl
from uper_parsing.modeling import SemanticSegmentor, build_model
from uper_parsing.modeling.meta_arch import META_ARCH_REGISTRY


@pytest.mark.parametrize("head", ["UPerNetHead", "PSPHead", "FCNHead", "SemSegFPNHead"])
def test_every_parameter_gets_a_gradient(tiny_cfg, batched_inputs, head):
    torch.manual_seed(0)
    cfg = tiny_cfg(head, aux=True)
    cfg.MODEL.BACKBONE.FREEZE_AT = 2 if head == "UPerNetHead" else 0
    model = build_model(cfg)
    model.train()
    losses = model(batched_inputs(with_labels=True))
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    sum(losses.values()).backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert bool(frozen) == (cfg.MODEL.BACKBONE.FREEZE_AT > 0)
    assert all(n.startswith(("backbone.stem.", "backbone.res2.")) for n in frozen)
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_preprocess_pads_images_with_zero_and_labels_with_ignore(tiny_cfg, batched_inputs):
    model = build_model(tiny_cfg())
    inputs = batched_inputs(with_labels=True)
    images, sizes = model.preprocess_image(inputs)
    assert sizes == [(45, 45), (61, 37)] and images.shape == (2, 3, 64, 64)
    assert model.size_divisibility == 32
    expected = (inputs[1]["image"] - model.pixel_mean) / model.pixel_std
    torch.testing.assert_close(images[1, :, :61, :37], expected)
    assert images[1, :, 61:].eq(0).all() and images[1, :, :, 37:].eq(0).all()
    targets = model.preprocess_targets(inputs, sizes)
    assert targets.shape == (2, 64, 64) and targets.dtype == torch.long
    assert targets[0, 45:].eq(255).all() and torch.equal(targets[0, :45, :45], inputs[0]["sem_seg"])
    assert model.pixel_mean.shape == (3, 1, 1) and model.device == torch.device("cpu")


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["TEST.MODE", "slide", "TEST.SLIDE_CROP_SIZE", [48, 48], "TEST.SLIDE_STRIDE", [32, 32]],
        ["TEST.AUG.ENABLED", True, "TEST.AUG.SCALES", [0.75, 1.0], "TEST.AUG.FLIP", True],
    ],
)
def test_inference_returns_scores_at_requested_size(tiny_cfg, batched_inputs, overrides):
    cfg = tiny_cfg("UPerNetHead")
    cfg.merge_from_list(overrides)
    model = build_model(cfg).eval()
    inputs = batched_inputs(with_labels=False)
    with torch.no_grad():
        outputs = model(inputs)
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(k, 90, 90), (k, 30, 20)]
    assert all(torch.isfinite(o["sem_seg"]).all() for o in outputs)
    if cfg.TEST.AUG.ENABLED:  # probabilities
        torch.testing.assert_close(outputs[0]["sem_seg"].sum(0), torch.ones(90, 90))


def test_inference_without_height_width_keeps_input_size(tiny_cfg, batched_inputs):
    model = build_model(tiny_cfg("SemSegFPNHead")).eval()
    inputs = [{"image": x["image"]} for x in batched_inputs(with_labels=False)]
    with torch.no_grad():
        outputs = model(inputs)
    assert [tuple(o["sem_seg"].shape[1:]) for o in outputs] == [(45, 45), (61, 37)]


def test_whole_inference_equals_head_logits_resized(tiny_cfg, batched_inputs):
    """Inference is the head's logits, upsampled to the padded size, cropped, then resized."""
    from uper_parsing.layers import resize_to

    model = build_model(tiny_cfg("UPerNetHead")).eval()
    inputs = batched_inputs(with_labels=False)
    with torch.no_grad():
        outputs = model(inputs)
        images, _ = model.preprocess_image(inputs)
        logits = resize_to(model.sem_seg_head.layers(model.backbone(images)), (64, 64))
    expected = resize_to(logits[1:, :, :61, :37], (30, 20))[0]
    torch.testing.assert_close(outputs[1]["sem_seg"], expected)


def test_training_errors_name_the_problem(tiny_cfg, batched_inputs):
    model = build_model(tiny_cfg("FCNHead")).train()
    inputs = batched_inputs(with_labels=True)
    del inputs[1]["sem_seg"]
    with pytest.raises(ValueError, match="input 1 has no 'sem_seg'"):
        model(inputs)
    inputs = batched_inputs(with_labels=True)
    inputs[0]["sem_seg"] = inputs[0]["sem_seg"][:40]
    with pytest.raises(ValueError, match="input 0"):
        model(inputs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_build_model_falls_back_to_cpu(tiny_cfg, caplog):
    cfg = tiny_cfg("FCNHead")
    cfg.MODEL.DEVICE = "cuda"
    with caplog.at_level(logging.WARNING, logger="uper_parsing.modeling.meta_arch.build"):
        model = build_model(cfg)
    assert isinstance(model, SemanticSegmentor) and model.device == torch.device("cpu")
    assert "CUDA is not available" in caplog.text
    assert META_ARCH_REGISTRY.get("SemanticSegmentor") is SemanticSegmentor


@pytest.mark.parametrize("head", ["UPerNetHead", "PSPHead", "SemSegFPNHead"])
def test_channels_last_model_computes_the_same(tiny_cfg, batched_inputs, check_channels_last, head):
    def build(channels_last: bool):
        cfg = tiny_cfg(head, aux=True)
        cfg.MODEL.CHANNELS_LAST = channels_last
        return build_model(cfg)

    check_channels_last(build, batched_inputs(with_labels=True), batched_inputs(with_labels=False))


@pytest.mark.parametrize("head", ["UPerNetHead", "PSPHead", "SemSegFPNHead"])
def test_resize_impls_compute_the_same_model(tiny_cfg, batched_inputs, head):
    """MODEL.RESIZE_IMPL changes how, not what: losses, every gradient and the outputs (float64)."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(head, aux=True)).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = []
    for impl in ("interpolate", "matmul"):
        with resize_impl(impl):
            model.load_state_dict(state)  # the same BN statistics at evaluation
            model.train()
            model.zero_grad()
            losses = model(batched_inputs(with_labels=True))
            sum(losses.values()).backward()
            grads = [p.grad.clone() for p in model.parameters()]
            with torch.no_grad():
                outputs = [o["sem_seg"] for o in model.eval()(batched_inputs(with_labels=False))]
        results.append((losses, grads, outputs))
    (ref_losses, ref_grads, ref_out), (losses, grads, out) = results
    torch.testing.assert_close(losses, ref_losses, rtol=1e-10, atol=1e-12)
    for grad, ref_grad in zip(grads, ref_grads):
        assert (grad - ref_grad).norm() <= 1e-9 * ref_grad.norm() + 1e-12
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
