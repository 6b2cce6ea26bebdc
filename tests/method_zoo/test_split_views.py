"""split_views regroups shuffled multi-view rows and rejects the wrong number of views."""

import pytest
import torch

from method_zoo import MethodError, split_views


def _shuffled_batch(n_images: int, n_views: int, seed: int = 0):
    sample_idx = torch.arange(n_images).repeat_interleave(n_views)
    view_id = torch.arange(n_views).repeat(n_images)
    # Row content encodes (image, view) so alignment is checkable after any permutation.
    x = torch.stack([sample_idx * 10 + view_id, -sample_idx], dim=1).float()
    perm = torch.randperm(n_images * n_views, generator=torch.Generator().manual_seed(seed))
    return x[perm], sample_idx[perm], view_id[perm]


def test_shuffled_rows_are_regrouped_by_image():
    x, sample_idx, _ = _shuffled_batch(n_images=5, n_views=2, seed=3)
    a, b = split_views(x, sample_idx, n_views=2, method="simclr_forward")
    assert a.shape == b.shape == (5, 2)
    # Same image on each row of both views, and the two rows are different views.
    torch.testing.assert_close(a[:, 1], b[:, 1])
    assert torch.all(a[:, 0] // 10 == b[:, 0] // 10)
    assert torch.all(a[:, 0] != b[:, 0])
    assert sorted((-a[:, 1]).long().tolist()) == list(range(5))


def test_views_keep_their_batch_order_within_an_image():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    a, b = split_views(x, torch.tensor([7, 3, 3, 7]), n_views=2, method="m")
    torch.testing.assert_close(a, torch.tensor([[1.0], [0.0]]))  # image 3 first, then image 7
    torch.testing.assert_close(b, torch.tensor([[2.0], [3.0]]))


def test_gradient_reaches_original_rows():
    x, sample_idx, _ = _shuffled_batch(n_images=3, n_views=2)
    x.requires_grad_()
    a, b = split_views(x, sample_idx, 2, "m")
    (a.sum() + 2 * b.sum()).backward()
    assert sorted(x.grad[:, 0].tolist()) == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_three_views_to_a_two_view_method_raises_one_line_error():
    x, sample_idx, _ = _shuffled_batch(n_images=4, n_views=3)
    with pytest.raises(MethodError) as info:
        split_views(x, sample_idx, n_views=2, method="simclr_forward")
    message = str(info.value)
    assert "\n" not in message
    assert "simclr_forward needs 2 views per image but the batch has 3" in message
    assert "data.views=2" in message


def test_ragged_view_counts_are_reported():
    with pytest.raises(MethodError, match="between 1 and 2"):
        split_views(torch.zeros(3, 2), torch.tensor([0, 0, 1]), 2, "vicreg_forward")


def test_sample_idx_of_wrong_length_is_a_method_error():
    with pytest.raises(MethodError, match="one entry per row"):
        split_views(torch.zeros(4, 2), torch.tensor([0, 0, 1]), 2, "m")


def test_loader_layout_takes_the_host_fast_path_and_matches_the_general_path():
    n, views = 6, 3
    x = torch.randn(n * views, 4, requires_grad=True)
    # the loaders' layout: view v of image i at row v * n + i, images named by (shuffled) dataset indices
    canonical = torch.tensor([40, 3, 17, 8, 25, 11]).repeat(views)
    fast = split_views(x, canonical, views, "m")
    # The same rows under a permutation go through the sort path; regrouped they must be the same views.
    perm = torch.randperm(n * views, generator=torch.Generator().manual_seed(1))
    general = split_views(x[perm], canonical[perm], views, "m")
    for v in range(views):
        torch.testing.assert_close(fast[v], x[v * n:(v + 1) * n])
    # The sort path orders images by index and keeps batch order within an image: compare the rows per image.
    by_index = canonical[:n].argsort()
    for i in range(n):
        torch.testing.assert_close(torch.stack([f[by_index[i]] for f in fast]).sort(0).values,
                                   torch.stack([g[i] for g in general]).sort(0).values)
    sum(f.sum() * (v + 1) for v, f in enumerate(fast)).backward()
    assert x.grad[:, 0].tolist() == [1.0] * n + [2.0] * n + [3.0] * n


def test_split_crops_pairs_global_and_local_rows_of_the_same_image_in_any_row_order():
    from method_zoo.forwards.common import split_crops

    n, n_global, n_local = 5, 2, 3
    ids = torch.tensor([12, 4, 30, 7, 19])
    perm_g = torch.randperm(n * n_global, generator=torch.Generator().manual_seed(0))
    perm_l = torch.randperm(n * n_local, generator=torch.Generator().manual_seed(1))
    # Rows in no canonical order (as after a gather, or on an accelerator) make both groups take the sorting path.
    batch = {"image": torch.zeros(n * n_global), "sample_idx": ids.repeat(n_global)[perm_g],
             "local_image": torch.zeros(n * n_local), "local_sample_idx": ids.repeat(n_local)[perm_l]}
    out_g = batch["sample_idx"].float().view(-1, 1)
    out_l = batch["local_sample_idx"].float().view(-1, 1) + 0.5  # local rows are told apart by the half
    globals_, locals_ = split_crops(out_g, out_l, batch, n_global, "swav_forward")
    assert len(globals_) == n_global and len(locals_) == n_local
    for view in globals_:
        torch.testing.assert_close(view, globals_[0])
    for view in locals_:
        torch.testing.assert_close(view, globals_[0] + 0.5)
