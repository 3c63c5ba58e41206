"""UnifiedPerceptualParser: shapes, per-task losses and gradients, grouped part loss, phases."""

import pytest
import torch
import torch.nn.functional as F

from uper_parsing.data import MetadataCatalog
from uper_parsing.modeling import ResNet, UnifiedPerceptualParser, build_model
from uper_parsing.modeling.meta_arch import META_ARCH_REGISTRY
from uper_parsing.modeling.multitask import grouped_part_cross_entropy, grouped_part_softmax
from uper_parsing.tasks import configure_model

OBJECT_PARTS = [[], [0, 1], [2, 3, 4]]  # 3 objects; object 1 owns parts 0-1, object 2 parts 2-4
NUM = {"object": 3, "part": 5, "material": 4, "scene": 3, "texture": 6}
ALL_TASKS = ("object", "part", "material", "scene", "texture")
SIZES = (((45, 61), (30, 40)), ((37, 53), (37, 53)))  # (image h, w), (output height, width)


def _model(**kwargs) -> UnifiedPerceptualParser:
    torch.manual_seed(0)
    args = dict(
        backbone=ResNet(depth=18, norm="BN"),
        num_objects=NUM["object"],
        object_parts=OBJECT_PARTS,
        num_materials=NUM["material"],
        num_scenes=NUM["scene"],
        num_textures=NUM["texture"],
        convs_dim=16,
        pool_scales=(1, 2),
        dropout=0.0,
        texture_convs_dim=8,
        texture_num_convs=2,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return UnifiedPerceptualParser(**{**args, **kwargs})


def _consistent_parts(objects: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Global part ids that mostly belong to the pixel's object (some foreign, some ignored)."""
    parts = torch.full_like(objects, 255)
    for obj, owned in enumerate(OBJECT_PARTS):
        if owned:
            choice = torch.randint(0, len(owned), objects.shape, generator=gen)
            parts = torch.where(objects == obj, torch.tensor(owned)[choice], parts)
    parts[:, :2] = 0  # part of object 1 wherever the object is: partly foreign, partly valid
    return parts


def _inputs(tasks=ALL_TASKS, *, all_ignored: bool = False) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    batch = []
    for (h, w), (out_h, out_w) in SIZES:
        x = {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)}
        x.update(height=out_h, width=out_w, tasks=tuple(tasks))
        objects = torch.randint(0, NUM["object"], (h, w), generator=gen)
        maps = {
            "object": objects,
            "part": _consistent_parts(objects, gen),
            "material": torch.randint(0, NUM["material"], (h, w), generator=gen),
        }
        for key, label in maps.items():
            if key in tasks or (key == "object" and "part" in tasks):
                x[key] = torch.full_like(label, 255) if all_ignored else label
        for key in ("scene", "texture"):
            if key in tasks:
                x[key] = int(torch.randint(0, NUM[key], (), generator=gen))
        batch.append(x)
    return batch


def _grads(module: torch.nn.Module) -> list:
    return [p.grad for p in module.parameters()]


def test_inference_outputs_every_task_at_the_requested_size():
    model = _model().eval()
    with torch.no_grad():
        outputs = model(_inputs())
    assert model.find_unused_parameters is True
    for out, (_, (h, w)) in zip(outputs, SIZES):
        assert set(out) == set(ALL_TASKS)
        for task in ("object", "part", "material"):
            assert out[task].shape == (NUM[task], h, w), task
        assert out["scene"].shape == (NUM["scene"],) and out["texture"].shape == (NUM["texture"],)
        for parts in OBJECT_PARTS[1:]:
            torch.testing.assert_close(out["part"][parts].sum(0), torch.ones(h, w))


def test_inference_outputs_only_the_built_tasks():
    model = _model(tasks=("object", "scene")).eval()
    assert set(model.heads) == {"object", "scene"}
    with torch.no_grad():
        outputs = model(_inputs())
    assert set(outputs[0]) == {"object", "scene"}


def test_full_task_batch_gives_every_parameter_a_gradient():
    model = _model().train()
    losses = model(_inputs())
    assert set(losses) == {f"loss_{t}" for t in ALL_TASKS}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_batch_without_part_gives_no_part_loss_and_no_part_gradient():
    model = _model().train()
    losses = model(_inputs(("object", "material", "scene")))
    assert set(losses) == {"loss_object", "loss_material", "loss_scene"}
    sum(losses.values()).backward()
    assert all(g is None for g in _grads(model.heads["part"]))
    assert all(g is None for g in _grads(model.heads["texture"]))
    assert all(g is not None for g in _grads(model.heads["material"]) + _grads(model.trunk))


def test_texture_loss_gives_no_gradient_into_the_backbone():
    model = _model().train()
    model(_inputs())["loss_texture"].backward()
    assert all(g is None for g in _grads(model.backbone) + _grads(model.trunk))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.heads["texture"]))


def test_texture_batch_runs_the_backbone_only_up_to_res2():
    model = _model().train()
    calls = []
    model.backbone.res3.register_forward_hook(lambda *args: calls.append("res3"))
    model.trunk.register_forward_hook(lambda *args: calls.append("trunk"))
    losses = model(_inputs(("texture",)))
    assert set(losses) == {"loss_texture"} and calls == []
    losses["loss_texture"].backward()
    assert all(g is None for g in _grads(model.backbone))


def test_losses_are_weighted_and_finite_when_every_pixel_is_ignored():
    model = _model().train()
    losses = model(_inputs(all_ignored=True))
    for key in ("loss_object", "loss_part", "loss_material"):
        assert losses[key].item() == 0.0, key
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.loss_weights == {**dict.fromkeys(ALL_TASKS, 1.0), "part": 0.5, "scene": 0.25}


def test_each_loss_is_multiplied_by_its_weight():
    weights = {"object": 2.0, "part": 3.0, "material": 0.5, "scene": 4.0, "texture": 0.1}
    unit = _model(loss_weights=dict.fromkeys(ALL_TASKS, 1.0)).train()(_inputs())
    weighted = _model(loss_weights=weights).train()(_inputs())
    for task, weight in weights.items():
        torch.testing.assert_close(weighted[f"loss_{task}"], unit[f"loss_{task}"] * weight)


def _hand_part_loss(logits, objects, parts, normalize="object") -> float:
    """CSAIL's part loss, by loops: for each object o with parts and each image where some pixel
    of o carries a real part of o (not its first, "-"), every pixel of o whose part is one of o's
    gives -log softmax over o's parts; per object the mean over those pixels, summed over objects
    ("pixel": one mean over all of them)."""
    per_object = {}
    for n in range(objects.shape[0]):
        for obj, owned in enumerate(OBJECT_PARTS):
            inside = objects[n] == obj
            if not owned or not any(bool((inside & (parts[n] == p)).any()) for p in owned[1:]):
                continue  # not a valid image for obj
            for i, j in inside.nonzero().tolist():
                part = int(parts[n, i, j])
                if part in owned:
                    group = logits[n, owned, i, j]
                    value = -float(group[owned.index(part)] - torch.logsumexp(group, 0))
                    per_object.setdefault(obj, []).append(value)
    if normalize == "pixel":
        values = sum(per_object.values(), [])
        return sum(values) / len(values)
    return sum(sum(v) / len(v) for v in per_object.values())


def test_part_loss_matches_csail_per_object_mean_with_valid_images():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 3, 4, generator=gen, dtype=torch.float64)
    objects = torch.tensor([[[1, 1, 2, 2], [0, 2, 255, 1], [2, 2, 1, 0]]] * 3)
    # counted: parts of the pixel's object ("-" = 0 for object 1, 2 for object 2) in images
    # where the object shows a real part; ignored: 255, foreign parts, object 0
    parts = torch.tensor(
        [
            [[0, 1, 2, 4], [255, 3, 2, 3], [4, 1, 1, 255]],
            [[1, 1, 3, 3], [0, 255, 4, 0], [2, 0, 0, 1]],
            [[0, 0, 2, 2], [0, 2, 255, 0], [2, 2, 0, 0]],  # only "-": no image for 1 or 2
        ]
    )
    for normalize in ("object", "pixel"):
        loss = grouped_part_cross_entropy(logits, objects, parts, OBJECT_PARTS, normalize=normalize)
        expected = _hand_part_loss(logits, objects, parts, normalize)
        assert loss.item() == pytest.approx(expected, rel=1e-6), normalize
    # the third image alone: no object has a real part, so nothing counts
    alone = grouped_part_cross_entropy(logits[2:], objects[2:], parts[2:], OBJECT_PARTS)
    assert alone.item() == 0.0
    # object 1 alone, pixels (0, 0, 0) "-" and (0, 0, 1) part 1: the mean of the two terms,
    # the same under both normalisations
    single = torch.full_like(objects[:1], 255)
    single[0, 0, :2] = 1
    group = F.log_softmax(logits[0, [0, 1], 0, :2], 0)
    expected = -(group[0, 0] + group[1, 1]) / 2
    for normalize in ("object", "pixel"):
        torch.testing.assert_close(
            grouped_part_cross_entropy(
                logits[:1], single, parts[:1], OBJECT_PARTS, normalize=normalize
            ).double(),  # fmt: skip
            expected,
        )


def test_part_loss_is_zero_and_connected_without_valid_pixels():
    logits = torch.randn(1, 5, 3, 4, requires_grad=True)
    objects = torch.zeros(1, 6, 8, dtype=torch.long)  # object 0 has no parts
    loss = grouped_part_cross_entropy(logits, objects, torch.zeros_like(objects), OBJECT_PARTS)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_grouped_part_softmax_normalises_each_object_slice():
    logits = torch.randn(2, 5, 3, 4)
    probs = grouped_part_softmax(logits, OBJECT_PARTS)
    torch.testing.assert_close(probs[:, 2:], logits[:, 2:].softmax(1))
    torch.testing.assert_close(probs[:, :2], logits[:, :2].softmax(1))


def test_second_phase_freezes_everything_but_the_texture_head():
    model = _model(texture_training="second_phase").train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"heads.texture.{n}" for n, _ in model.heads["texture"].named_parameters()}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.training == name.startswith("heads.texture."), name
    running_mean = model.backbone.stem[1].running_mean.clone()
    model(_inputs(("texture",)))["loss_texture"].backward()
    assert torch.equal(model.backbone.stem[1].running_mean, running_mean)
    with pytest.raises(ValueError, match="none of the trained tasks"):
        model(_inputs(("object", "scene")))


def test_batch_with_mixed_tasks_or_missing_targets_is_rejected():
    model = _model().train()
    inputs = _inputs(("scene",))
    inputs[1]["tasks"] = ("texture",)
    with pytest.raises(ValueError, match="different tasks"):
        model(inputs)
    inputs = _inputs(("part",))
    del inputs[1]["object"]
    with pytest.raises(ValueError, match="input 1 has no 'object'"):
        model(inputs)


@pytest.fixture
def multitask_metadata():
    """Factory: ``multitask_metadata(part_classes)`` -> name of a registered metadata."""
    names = []

    def register(part_classes=("b/x", "b/y", "c/x", "c/y", "c/z")) -> str:
        names.append(f"_test_unified_parser_train_{len(names)}")
        MetadataCatalog.get(names[-1]).set(
            object_classes=["a", "b", "c"],
            part_classes=list(part_classes),
            object_parts=OBJECT_PARTS,
            material_classes=[f"m{i}" for i in range(NUM["material"])],
            scene_classes=[f"s{i}" for i in range(NUM["scene"])],
            texture_classes=[f"t{i}" for i in range(NUM["texture"])],
            ignore_label=255,
        )
        return names[-1]

    yield register
    for name in names:
        MetadataCatalog.remove(name)


def test_from_config_reads_class_counts_from_metadata(tiny_cfg, multitask_metadata):
    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "UnifiedPerceptualParser"
    cfg.DATASETS.TRAIN = (multitask_metadata(),)
    cfg.MODEL.MULTITASK.TEXTURE_CONVS_DIM = 8
    cfg.MODEL.MULTITASK.TEXTURE_NUM_CONVS = 2
    cfg.MODEL.MULTITASK.SCENE_LOSS_WEIGHT = 0.3
    configure_model(cfg, check=False)  # set-up: class counts from the metadata into the config
    model = build_model(cfg)
    assert isinstance(model, META_ARCH_REGISTRY.get("UnifiedPerceptualParser"))
    assert model.trunk.predictor is None  # CSAIL layout: heads.object (3x3 conv + 1x1)
    assert model.heads["object"].classifier.out_channels == NUM["object"]
    assert len(model.heads["part"].convs) == len(model.heads["object"].convs) == 1
    assert model.heads["part"].object_parts == OBJECT_PARTS
    assert model.heads["material"].classifier.out_channels == NUM["material"]
    assert model.heads["scene"].classifier.out_features == NUM["scene"]
    assert model.heads["texture"].classifier.out_channels == NUM["texture"]
    assert len(model.heads["texture"].convs) == 2 and model.loss_weights["scene"] == 0.3
    cfg.DATASETS.TRAIN = (multitask_metadata(part_classes=["b/x"]),)
    with pytest.raises(ValueError, match="part_classes has 1"):
        configure_model(cfg, check=False)


def test_channels_last_model_computes_the_same(check_channels_last):
    def build(channels_last: bool):
        model = _model()
        return model.to(memory_format=torch.channels_last) if channels_last else model

    test_batch = [{k: x[k] for k in ("image", "height", "width")} for x in _inputs()]
    check_channels_last(build, _inputs(), test_batch)


def test_from_config_sizes_heads_from_a_checkpoint_without_the_dataset(
    tiny_cfg, multitask_metadata, tmp_path
):
    from uper_parsing.checkpoint import Checkpointer
    from uper_parsing.data.multitask_utils import model_metadata

    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "UnifiedPerceptualParser"
    cfg.DATASETS.TRAIN = (multitask_metadata(),)
    cfg.MODEL.MULTITASK.TEXTURE_CONVS_DIM = 8
    unset = cfg.clone()
    configure_model(cfg, check=False)
    trained = build_model(cfg)
    stored = model_metadata(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]))
    Checkpointer(trained, str(tmp_path), save_to_disk=True, metadata=stored).save("model_final")

    cfg = unset  # the class counts unset again: set-up reads them from MODEL.WEIGHTS
    cfg.DATASETS.TRAIN = ("_test_unified_parser_not_registered",)
    with pytest.raises(ValueError, match="not_registered.*no object_classes.*MODEL.WEIGHTS"):
        configure_model(cfg, check=False)
    with pytest.raises(ValueError, match="MODEL.MULTITASK.NUM_OBJECTS.*not set"):
        build_model(cfg)  # the model reads no catalog: an unset count is an error naming it
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    configure_model(cfg, check=False)
    model = build_model(cfg)
    assert model.heads["part"].object_parts == OBJECT_PARTS
    assert model.heads["scene"].classifier.out_features == NUM["scene"]
    Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    MetadataCatalog.remove("_test_unified_parser_not_registered")


def test_part_loss_gradient_matches_the_hand_computed_loss():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    objects = torch.tensor([[[1, 1, 2, 2], [0, 2, 2, 1], [2, 2, 1, 0]]] * 2)
    parts = torch.tensor([[[0, 1, 2, 4], [0, 3, 2, 0], [4, 1, 0, 0]]] * 2)
    for normalize in ("object", "pixel"):
        (grad,) = torch.autograd.grad(
            grouped_part_cross_entropy(logits, objects, parts, OBJECT_PARTS, normalize=normalize),
            logits,
        )
        # against finite differences of the loop implementation
        eps, flat = 1e-6, logits.detach().clone()
        for index in [(0, 0, 0, 0), (0, 1, 0, 1), (1, 3, 1, 1), (1, 4, 2, 0), (0, 2, 1, 0)]:
            bumped = flat.clone()
            bumped[index] += eps
            numeric = (_hand_part_loss(bumped, objects, parts, normalize)
                       - _hand_part_loss(flat, objects, parts, normalize)) / eps  # fmt: skip
            assert grad[index].item() == pytest.approx(numeric, abs=1e-5), (normalize, index)
        assert grad.abs().sum() > 0
