"""The exportable pooling of ``uper_parsing.export.pooling``: equal to PyTorch's adaptive average
pooling and to ``PrRoIPool2d`` at every size (odd, smaller than the bins, 1x1), swapped into a
copy only, and still equal after tracing at one size and running at others."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uper_parsing.export import (
    ExportableAdaptiveAvgPool2d,
    ExportablePrRoIPool2d,
    adaptive_avg_pool_matrix,
    with_exportable_pools,
)
from uper_parsing.export.pooling import separable_map
from uper_parsing.modeling.sem_seg_heads.ppm import (
    PPM,
    PrRoIPool2d,
    prroi_pool_matrix,
    prroi_pool_weights,
)

ODD_SIZES = [(7, 11), (45, 45), (33, 17), (1, 1), (2, 5), (6, 6), (13, 1)]
BINS = [1, 2, 3, 6, (2, 3)]


@pytest.mark.parametrize("length", [1, 2, 5, 7, 12, 45])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_pool_matrix_is_pytorchs_pooling_of_the_identity(length, bins):
    """Oracle: adaptive_avg_pool1d of the identity matrix returns the pooling weights."""
    oracle = F.adaptive_avg_pool1d(torch.eye(length, dtype=torch.float64)[None], bins)[0].T
    matrix = adaptive_avg_pool_matrix(length, bins, dtype=torch.float64)
    assert matrix.shape == (bins, length)
    torch.testing.assert_close(matrix, oracle, rtol=0, atol=1e-15)


@pytest.mark.parametrize("hw", ODD_SIZES)
@pytest.mark.parametrize("bins", BINS)
def test_exportable_average_pool_equals_adaptive_avg_pool2d(hw, bins):
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(2, 3, *hw, generator=gen, dtype=torch.float64)
    pool = ExportableAdaptiveAvgPool2d(bins)
    torch.testing.assert_close(pool(x64), F.adaptive_avg_pool2d(x64, bins), rtol=0, atol=1e-14)
    x32 = x64.float() * 100
    out, oracle = pool(x32), F.adaptive_avg_pool2d(x32, bins)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, oracle, rtol=1e-6, atol=2e-5)  # float32 rounding of 100s


@pytest.mark.parametrize("hw", ODD_SIZES)
@pytest.mark.parametrize("bins", BINS)
def test_exportable_prroi_pool_equals_prroi_pool(hw, bins):
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        ExportablePrRoIPool2d(bins)(x), PrRoIPool2d(bins)(x), rtol=1e-6, atol=1e-6
    )


def test_prroi_matrix_is_the_cached_weights():
    """The refactor kept PrRoIPool's numbers: the cached float64 weights are the matrix."""
    for length, bins in [(7, 3), (45, 6), (1, 1), (2, 6)]:
        assert torch.equal(prroi_pool_weights(length, bins), prroi_pool_matrix(length, bins))
    # the last bin loses the half pixel of zeros past the last pixel centre
    weights = prroi_pool_matrix(7, 3)
    torch.testing.assert_close(weights.sum(1)[-1], torch.tensor(1 - 0.5 * 3 / 7).double())


def test_separable_map_is_rows_x_cols():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    rows = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    cols = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(separable_map(x, rows, cols), rows @ x @ cols.T)


def test_swap_replaces_pools_in_a_copy_only():
    model = nn.Sequential(
        PPM(8, 4, pool_scales=(1, 2, 3, 6), norm="BN"),
        PPM(24, 4, pool_scales=(2, 3), norm="BN", pool="prroi"),
    ).eval()
    swapped = with_exportable_pools(model)
    assert sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()) == 4
    assert sum(isinstance(m, PrRoIPool2d) for m in model.modules()) == 2
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, PrRoIPool2d)) for m in swapped.modules())
    kinds = [type(m).__name__ for m in swapped.modules() if "Exportable" in type(m).__name__]
    assert kinds.count("ExportableAdaptiveAvgPool2d") == 4
    assert kinds.count("ExportablePrRoIPool2d") == 2
    x = torch.randn(2, 8, 9, 13, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x), rtol=1e-5, atol=1e-5)


def test_swap_of_a_pool_itself_and_of_an_output_size_of_none():
    assert isinstance(with_exportable_pools(nn.AdaptiveAvgPool2d(3)), ExportableAdaptiveAvgPool2d)
    with pytest.raises(ValueError, match="output size of None"):
        with_exportable_pools(nn.Sequential(nn.AdaptiveAvgPool2d((None, 2))))


@pytest.mark.parametrize("pool_cls", [ExportableAdaptiveAvgPool2d, ExportablePrRoIPool2d])
def test_traced_pool_follows_the_runtime_size(pool_cls):
    """Traced at 12x18 (divisible by every bin), run at sizes no bin divides: a trace that kept
    the traced bins would give other values, or fail."""
    pool = pool_cls(6)
    reference = (
        nn.AdaptiveAvgPool2d(6) if pool_cls is ExportableAdaptiveAvgPool2d else PrRoIPool2d(6)
    )
    traced = torch.jit.trace(pool, torch.rand(1, 2, 12, 18), check_trace=False)
    for hw in [(7, 11), (45, 45), (33, 17), (1, 1)]:
        x = torch.randn(3, 2, *hw, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(traced(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # one ONNX export (about 20 s on 2 busy cores)
def test_onnx_pyramid_pooling_at_sizes_no_bin_divides(tmp_path):
    """Both PPM pools exported with dynamic sizes, run by onnxruntime at sizes none of the bins
    1, 2, 3, 6 divides (an exported nn.AdaptiveAvgPool2d keeps the traced bin bounds: at
    another size onnxruntime fails with an index out of range)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = nn.Sequential(PPM(8, 4, norm="BN"), PPM(24, 4, norm="BN", pool="prroi")).eval()
    exportable = with_exportable_pools(model)
    path = str(tmp_path / "ppm.onnx")
    dims = {i: torch.export.Dim(f"d{i}", min=1) for i in (0, 2, 3)}
    with torch.no_grad():
        torch.onnx.export(
            exportable, (torch.rand(1, 8, 12, 18),), path, dynamo=True, verbose=False,
            input_names=["x"], dynamic_shapes=(dims,),
        )  # fmt: skip
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for hw in [(7, 11), (45, 45), (33, 17), (1, 1)]:
        x = torch.randn(2, 8, *hw, generator=torch.Generator().manual_seed(5))
        (out,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-5, atol=1e-5)
