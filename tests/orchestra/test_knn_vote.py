"""The kNN vote: a brute-force reference, and the same answer under bf16 autocast as in float32."""

import torch
import torch.nn.functional as F

from orchestra.callbacks.knn import knn_predict


def _reference(queries, bank, labels, num_classes, k, temperature):
    """Loop per query in float64: the k most cosine-similar bank rows vote with weight exp(sim / T)."""
    predictions = []
    q, b = F.normalize(queries.double(), dim=1), F.normalize(bank.double(), dim=1)
    for row in q:
        sims = b @ row
        top = sims.argsort(descending=True)[:k]
        votes = torch.zeros(num_classes, dtype=torch.float64)
        for i in top:
            votes[labels[i]] += torch.exp(sims[i] / temperature)
        predictions.append(int(votes.argmax()))
    return torch.tensor(predictions)


def _clustered(seed: int, spread: float):
    """Embeddings that share one large direction and differ slightly by class, as early in SSL training."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(64, generator=gen) * 10
    centres = torch.randn(5, 64, generator=gen)
    labels = torch.randint(0, 5, (300,), generator=gen)
    points = common + spread * (centres[labels] + 0.3 * torch.randn(300, 64, generator=gen))
    return points, labels


def test_vote_matches_a_float64_reference():
    points, labels = _clustered(0, spread=1.0)
    queries, bank, bank_labels = points[:60], F.normalize(points[60:], dim=1), labels[60:]
    got = knn_predict(queries, bank, bank_labels, 5, k=20, temperature=0.07)
    assert torch.equal(got, _reference(queries, points[60:], bank_labels, 5, 20, 0.07))


def test_vote_under_bf16_autocast_equals_float32():
    # Cosine similarities all near 1: bf16 (about 3 significant digits) would tie them; the vote must not care.
    points, labels = _clustered(1, spread=0.05)
    queries, bank, bank_labels = points[:60], F.normalize(points[60:], dim=1), labels[60:]
    exact = knn_predict(queries, bank, bank_labels, 5, k=20, temperature=0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = knn_predict(queries, bank, bank_labels, 5, k=20, temperature=0.07)
    assert torch.equal(mixed, exact)
    assert (exact == labels[:60]).float().mean() > 0.9  # the classes are separable in float32
