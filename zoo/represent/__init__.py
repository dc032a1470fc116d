"""Learned representations, seen and measured: embeddings and intermediates, kNN and linear probes, CKA,
saliency, and self-supervised pretraining. One module per job:

- ``features``: ``embed``, ``intermediates``, ``tap`` (outputs of named layers at any depth)
- ``probes``: ``knn_accuracy`` (DINO's weighted kNN), ``linear_probe`` (scikit-learn logistic regression)
- ``layerwise``: every stage at once: kNN and linear-probe accuracy by layer, CKA maps between two models
- ``similarity``: ``cka`` (Kornblith et al. 2019), minibatch CKA (Nguyen et al. 2021)
- ``saliency``: ``gradcam``, ``attention_rollout``, ``integrated_gradients``, overlays
- ``pretraining``: ``pretrain`` (SimCLR, or supervised)
- ``pictures``: t-SNE / UMAP maps, the projector export, probe curves, CKA heat maps

Example:
    >>> emb = zoo.embed(model, "digits", split="test")
    >>> zoo.knn_accuracy(train.features, train.labels, emb.features, emb.labels)
"""
