"""MODEL.COMPILE: the compiled model computes what the eager one does and keeps its parameter
names (checkpoints load either way). Inductor needs a C++ compiler on the CPU."""

import os
import shutil

import pytest
import torch

from uper_parsing.modeling import build_model

pytestmark = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="torch.compile (inductor) needs a C++ compiler on the CPU",
)


INDUCTOR = pytest.param(
    "inductor",
    marks=pytest.mark.skipif(
        not os.environ.get("UPER_PARSING_TEST_INDUCTOR"),
        reason="inductor's CPU code generation takes minutes; UPER_PARSING_TEST_INDUCTOR=1 runs it",
    ),
)


@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])
def test_compiled_model_equals_eager(tiny_cfg, batched_inputs, backend):
    cfg = tiny_cfg("UPerNetHead", aux=True)
    cfg.MODEL.COMPILE.BACKEND = backend
    torch.manual_seed(0)
    eager = build_model(cfg)
    cfg.MODEL.COMPILE.ENABLED = True
    compiled = build_model(cfg)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." prefixes
    compiled.load_state_dict(eager.state_dict())
    results = []
    for model in (eager, compiled):
        losses = model(batched_inputs(with_labels=True))
        sum(losses.values()).backward()
        results.append((losses, [p.grad for p in model.parameters()]))
    (ref_losses, ref_grads), (losses, grads) = results
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        assert (grad - ref_grad).norm() <= 1e-3 * ref_grad.norm() + 1e-6
