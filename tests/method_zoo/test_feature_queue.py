"""method_zoo.FeatureQueue: a FIFO of rows in buffers, whose checkpoint keys are those orchestra always wrote."""

import torch
from torch import nn

from method_zoo import FeatureQueue


def test_fills_then_overwrites_the_oldest_rows():
    queue = FeatureQueue(length=5, dim=2)
    assert queue.contents().shape == (0, 2)
    queue.push(torch.arange(6.0).reshape(3, 2))
    assert torch.equal(queue.contents(), torch.arange(6.0).reshape(3, 2))
    queue.push(torch.arange(6.0, 12.0).reshape(3, 2))  # rows 3, 4 fill the end; row 5 overwrites row 0
    assert int(queue.filled) == 5 and int(queue.pointer) == 1
    assert torch.equal(queue.data[0], torch.tensor([10.0, 11.0]))
    assert torch.equal(queue.data[1:], torch.arange(2.0, 10.0).reshape(4, 2))


def test_a_push_longer_than_the_queue_keeps_its_last_rows():
    queue = FeatureQueue(length=3, dim=1)
    queue.push(torch.arange(7.0)[:, None])
    assert sorted(queue.contents().flatten().tolist()) == [4.0, 5.0, 6.0]


def test_push_stores_detached_rows_in_the_queue_dtype():
    queue = FeatureQueue(length=4, dim=2)
    rows = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    queue.push(rows)
    assert queue.data.dtype == torch.float32 and not queue.data.requires_grad


def test_checkpoint_keys_are_unchanged_by_the_move_from_orchestra_callbacks():
    # orchestra.Module keeps queues in a ModuleDict named `queues`; checkpoints written before the move hold these.
    holder = nn.Module()
    holder.queues = nn.ModuleDict({"nnclr_support_set": FeatureQueue(8, 4)})
    state = holder.state_dict()
    assert list(state) == ["queues.nnclr_support_set.data", "queues.nnclr_support_set.pointer",
                           "queues.nnclr_support_set.filled"]
    old = {"queues.nnclr_support_set.data": torch.ones(8, 4), "queues.nnclr_support_set.pointer": torch.tensor(3),
           "queues.nnclr_support_set.filled": torch.tensor(8)}
    holder.load_state_dict(old)
    assert int(holder.queues["nnclr_support_set"].pointer) == 3
    assert torch.equal(holder.queues["nnclr_support_set"].contents(), torch.ones(8, 4))
