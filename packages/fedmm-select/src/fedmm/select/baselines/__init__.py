"""Baselines of the select techniques, each a technique of its own: :class:`RandomUpload`
(FedMFS's random-γ upload)."""

from fedmm.select.baselines.random_upload import RandomUpload

__all__ = ["RandomUpload"]
