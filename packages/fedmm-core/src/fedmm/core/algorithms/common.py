"""What the client-side algorithms share: the weights a client received, kept for the round."""

from __future__ import annotations

from fedmm.core.protocol import ClientContext


def keep_received_weights(cctx: ClientContext, prefix: str) -> None:
    """Copy the trainable weights the client received into its state, as ``prefix + name``
    (``prepare`` runs after the global weights are loaded and before any step)."""
    if cctx.model is None:
        return
    for key, p in cctx.model.named_parameters():
        if p.requires_grad:
            cctx.state[prefix + key] = p.detach().cpu().numpy().copy()


def forget(cctx: ClientContext, prefix: str) -> None:
    """Drop the state entries under ``prefix`` (kept only during the round)."""
    for key in [k for k in cctx.state if k.startswith(prefix)]:
        del cctx.state[key]
