"""Per-modality embeddings and prototypes of a client's data."""

from __future__ import annotations

import numpy as np
import torch

from fedmm.core import datasets
from fedmm.core.embeddings import collect_embeddings, modality_prototypes
from fedmm.core.models import late_fusion


def test_prototypes_are_class_means_of_the_samples_that_have_the_modality() -> None:
    data = datasets.load("synthetic", clients=2, partition="iid", num_samples=120, missing_rate=0.3, seed=0)
    torch.manual_seed(0)
    model = late_fusion(
        data.modalities, data.num_classes, embed_dim=8, encoders={"a": "mlp", "b": "mlp"}
    ).eval()
    client = data.client(0)
    emb = collect_embeddings(model, client.batches(16, shuffle=False))
    assert emb.labels.shape[0] == client.num_samples
    assert not emb.present.all()  # missing_rate removed some samples' modalities
    protos = modality_prototypes(emb, data.num_classes)
    for j, m in enumerate(("a", "b")):
        keep = emb.present[:, j] & (emb.labels >= 0)
        with torch.no_grad():
            z = model(client.samples.batch(client.indices)).embeddings[m].numpy()[keep]
        y = emb.labels[keep]
        p, counts = protos[m]
        for c in range(data.num_classes):
            if counts[c]:
                np.testing.assert_allclose(p[c], z[y == c].mean(axis=0), rtol=1e-5, atol=1e-6)
            assert counts[c] == int(np.sum(y == c))
