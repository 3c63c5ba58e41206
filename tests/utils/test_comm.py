"""utils.comm.unwrap_model: the one place that takes a model out of its data-parallel wrapper."""

from torch import nn

from uper_parsing.utils import comm


def test_unwrap_model_takes_the_network_out_of_data_parallel_only():
    net = nn.Linear(2, 2)
    assert comm.unwrap_model(nn.DataParallel(net)) is net
    assert comm.unwrap_model(net) is net
    holder = nn.Module()
    holder.module = net  # an attribute named "module" is not a wrapper
    assert comm.unwrap_model(holder) is holder
