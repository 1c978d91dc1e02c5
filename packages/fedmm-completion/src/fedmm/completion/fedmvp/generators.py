"""A frozen cross-modal generator pre-trained on the server's public split (FedMVP's completion path
without a model hub).

FedMVP completes a missing modality with a frozen pre-trained model that *generates* it from the
modality the sample has (BLIP-2 captions an image; a text-to-image model draws from a caption).
Offline there are no such models for sensor or speech data, so the server pre-trains one on its
public split — complete pairs it holds, never client data — freezes it and ships it to the clients,
which then complete each incomplete sample from its *own* present modality:

* :class:`CrossModalGenerator` holds one network per ordered pair ``src → dst`` of the data's
  modalities. When both are sequences of the same length (hapt's accelerometer and gyroscope
  record the same movement) it is a temporal conv net, so each generated time step comes from the
  source's neighbouring steps — sample by sample, not a class template. Otherwise (av-digits'
  8x8 image → log-mel spectrogram) an MLP from the flattened source to the flattened target.
  Targets are standardised per value with the public split's mean and standard deviation (kept as
  buffers), trained with mean squared error, Adam. Nothing is conditioned on the label. Token
  (caption) modalities cannot be regressed: the captioner path
  (:class:`~fedmm.completion.fedmvp.completion.FoundationCompleter`) handles those.
* Built and saved like the library's other parts: ``from_config`` / ``config``,
  ``save_pretrained(folder)`` (``config.json`` + ``model.safetensors``) and
  ``from_pretrained(folder)``; weights never pass through pickle.
* :class:`GenerativeCompleter` is the :class:`~fedmm.completion.fedmvp.technique.Completer` on
  top: it fits the generator once (``fit``; FedMVP calls it in the server's ``configure`` of
  round 1, so the ledger charges the pre-training to the server), hands its weights out as arrays
  (``arrays`` — FedMVP puts them in a client's first plan, so they count as downloaded bytes) and
  completes samples (``complete``; run in the client's ``prepare``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.api import ConfigError, DataError, ModalitySpec, SampleSet, bar, integer

__all__ = ["CrossModalGenerator", "GenerativeCompleter", "probe_from_generator"]

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def _pair(src: str, dst: str) -> str:
    return f"{src}__to__{dst}"  # a ModuleDict key: no dots


class _Temporal(nn.Module):
    """``(B, T, C_src) → (B, T, C_dst)``: three same-length 1-D convolutions over time."""

    def __init__(self, c_src: int, c_dst: int, hidden: int, kernel: int = 5) -> None:
        super().__init__()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv1d(c_src, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv1d(hidden, c_dst, kernel, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class _Dense(nn.Module):
    """Any shape to any shape: an MLP from the flattened source to the flattened target."""

    def __init__(self, src: tuple[int, ...], dst: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        self.dst = dst
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(src), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(dst)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0], *self.dst)


class CrossModalGenerator(nn.Module):
    """One network per ordered pair of modalities, ``src → dst`` (see the module docstring).

    Args:
        modalities: the data's modality specs (token modalities are refused).
        hidden: width of every network.
    """

    def __init__(self, modalities: Sequence[ModalitySpec], hidden: int = 128) -> None:
        super().__init__()
        hidden = integer("CrossModalGenerator", "hidden", hidden, low=1)
        specs = tuple(modalities)
        if len(specs) < 2:
            raise ConfigError(
                "CrossModalGenerator needs at least two modalities to generate one from another"
            )
        for spec in specs:
            if spec.kind == "tokens":
                raise ConfigError(
                    f"CrossModalGenerator cannot regress the token modality {spec.name!r}; complete "
                    "captions with FoundationCompleter (a captioner) instead"
                )
        self.specs = specs
        self.hidden = hidden
        nets: dict[str, nn.Module] = {}
        for s in specs:
            for d in specs:
                if s.name == d.name:
                    continue
                same_time = s.kind == d.kind == "sequence" and s.shape[0] == d.shape[0]
                nets[_pair(s.name, d.name)] = (
                    _Temporal(s.shape[1], d.shape[1], hidden)
                    if same_time
                    else _Dense(s.shape, d.shape, hidden)
                )
        self.nets = nn.ModuleDict(nets)
        # The public split's per-value mean and std of each target (set by ``fit``).
        for spec in specs:
            self.register_buffer(f"mean_{spec.name}", torch.zeros(spec.shape))
            self.register_buffer(f"std_{spec.name}", torch.ones(spec.shape))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # -- configs and files ----------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return {
            "modalities": [
                {"name": s.name, "shape": list(s.shape), "kind": s.kind, "description": s.description}
                for s in self.specs
            ],
            "hidden": self.hidden,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CrossModalGenerator:
        try:
            specs = [
                ModalitySpec(
                    str(m["name"]),
                    tuple(int(v) for v in m["shape"]),
                    m["kind"],
                    str(m.get("description", "")),
                )
                for m in config["modalities"]
            ]
            return cls(specs, hidden=int(config.get("hidden", 128)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"not a CrossModalGenerator config ({exc!r}): it needs 'modalities' (name, shape, kind) and "
                "'hidden', as save_pretrained writes them"
            ) from exc

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME)
        )

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CrossModalGenerator:
        from safetensors.torch import load_file

        path = Path(folder).expanduser()
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise ConfigError(
                f"{str(path)!r} is not a saved CrossModalGenerator: it needs {CONFIG_NAME} and "
                f"{WEIGHTS_NAME} (written by save_pretrained)"
            )
        try:
            config = json.loads((path / CONFIG_NAME).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{str(path / CONFIG_NAME)!r} is not valid JSON: {exc}") from exc
        model = cls.from_config(config)
        model.load_arrays({k: v.numpy() for k, v in load_file(str(path / WEIGHTS_NAME)).items()})
        return model

    def arrays(self) -> dict[str, np.ndarray]:
        """Every weight and buffer as a numpy array (what is shipped to a client)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        own = self.state_dict()
        missing = sorted(set(own) - set(arrays))
        extra = sorted(set(arrays) - set(own))
        if missing or extra:
            raise DataError(
                f"generator weights do not match this CrossModalGenerator: missing {missing[:3]}, unexpected "
                f"{extra[:3]}; build it with the same modalities and hidden width"
            )
        for k, v in arrays.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise DataError(
                    f"generator weight {k!r} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
                )
        self.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
        self.eval()

    def check_modalities(self, samples: SampleSet, what: str) -> list[str]:
        """``samples``' modality names, which must be the generator's, in its order."""
        names = [s.name for s in self.specs]
        if list(samples.modality_names) != names:
            raise DataError(f"{what} have modalities {list(samples.modality_names)}, the generator {names}")
        return names

    # -- training and generation -----------------------------------------------------------------
    def fit(
        self,
        public: SampleSet,
        *,
        epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = False,
    ) -> CrossModalGenerator:
        """Train every ``src → dst`` network on ``public``'s complete pairs (MSE on the standardised
        target), then freeze. Labels are not used."""
        names = self.check_modalities(public, "the public split")
        rows = np.flatnonzero(public.present.all(axis=1) & ~public.generated.any(axis=1))
        if rows.size < 2:
            raise DataError(
                "the public split has fewer than 2 complete real pairs to pre-train the generator on; "
                "give the server more public data (validation_fraction)"
            )
        feats = {m: torch.from_numpy(np.asarray(public.features[m][rows], dtype=np.float32)) for m in names}
        for m in names:
            getattr(self, f"mean_{m}").copy_(feats[m].mean(dim=0))
            getattr(self, f"std_{m}").copy_(feats[m].std(dim=0).clamp_min(1e-6))
        targets = {m: (feats[m] - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}") for m in names}
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        for net in self.nets.values():
            for p in net.parameters():
                p.requires_grad_(True)
            net.train()
        opt = torch.optim.Adam(self.nets.parameters(), lr=lr)
        for _ in bar(range(epochs), enabled=progress, desc="pre-training the generator", unit="epoch"):
            order = torch.randperm(rows.size, generator=gen)
            for start in range(0, rows.size, batch_size):
                idx = order[start : start + batch_size]
                loss = torch.zeros(())
                for key, net in self.nets.items():
                    src, _, dst = key.partition("__to__")
                    loss = loss + F.mse_loss(net(feats[src][idx]), targets[dst][idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        for p in self.parameters():
            p.requires_grad_(False)
        self.fitted.fill_(True)  # type: ignore[operator]  # a registered buffer, not a method
        return self.eval()

    @torch.no_grad()
    def generate(self, src: str, dst: str, x: torch.Tensor) -> torch.Tensor:
        """``dst`` values generated from ``src`` values ``x`` (a batch), in the data's units."""
        key = _pair(src, dst)
        if key not in self.nets:
            raise DataError(
                f"no generator from {src!r} to {dst!r}; modalities: {[s.name for s in self.specs]}"
            )
        if not bool(self.fitted):
            raise ConfigError(
                "the CrossModalGenerator is not trained: call fit(public) or from_pretrained(folder)"
            )
        z = self.nets[key](x.float())
        return z * getattr(self, f"std_{dst}") + getattr(self, f"mean_{dst}")


class GenerativeCompleter:
    """Complete every missing modality of a sample from the modalities it has, with a frozen
    :class:`CrossModalGenerator` (the mean of the generations from each present modality).

    Args:
        generator: trained, or trained later by :meth:`fit` (FedMVP fits it on the server).
        public: the server's public split to :meth:`fit` on (omit for a trained generator).
        epochs, lr, seed: of :meth:`fit`.
        batch_size: of generation.
    """

    def __init__(
        self,
        generator: CrossModalGenerator,
        public: SampleSet | None = None,
        *,
        epochs: int = 30,
        lr: float = 1e-3,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
    ) -> None:
        self.generator = generator
        self.public = public
        self.epochs, self.lr, self.seed = epochs, lr, seed
        self.batch_size = batch_size
        self.progress = progress

    @property
    def fitted(self) -> bool:
        return bool(self.generator.fitted)

    def fit(self) -> None:
        """Pre-train the generator on the public split (once; a no-op when it is trained)."""
        if self.fitted:
            return
        if self.public is None:
            raise ConfigError(
                "GenerativeCompleter: the generator is not trained and no public split was given"
            )
        self.generator.fit(
            self.public, epochs=self.epochs, lr=self.lr, seed=self.seed, progress=self.progress
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return self.generator.arrays()

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.generator.load_arrays(arrays)

    def complete(self, samples: SampleSet) -> SampleSet:
        names = self.generator.check_modalities(samples, "the samples")
        feats = {m: samples.features[m].copy() for m in names}
        present, generated = samples.present.copy(), samples.generated.copy()
        for j, dst in enumerate(names):
            rows = np.flatnonzero(~samples.present[:, j] & samples.present.any(axis=1))
            for start in range(0, rows.size, self.batch_size):
                chunk = rows[start : start + self.batch_size]
                total = np.zeros((chunk.size, *feats[dst].shape[1:]), dtype=np.float64)
                count = np.zeros(chunk.size, dtype=np.float64)
                for k, src in enumerate(names):
                    have = samples.present[chunk, k]
                    if k == j or not have.any():
                        continue
                    x = torch.from_numpy(np.asarray(samples.features[src][chunk[have]], dtype=np.float32))
                    total[have] += self.generator.generate(src, dst, x).numpy()
                    count[have] += 1
                shape = (-1,) + (1,) * (total.ndim - 1)
                feats[dst][chunk] = (total / count.reshape(shape)).astype(feats[dst].dtype)
            present[rows, j] = generated[rows, j] = True
        return samples.with_columns(features=feats, present=present, generated=generated)


def probe_from_generator(public: SampleSet, generator: CrossModalGenerator, seed: int = 0) -> SampleSet:
    """FedMVP's CKA probe set as far as a cross-modal generator can make it: the public split's
    complete pairs, each with one modality (drawn at random, seeded) replaced by the generator's
    output from the other(s) and marked generated."""
    rows = np.flatnonzero(public.present.all(axis=1))
    base = public.take(rows)
    rng = np.random.default_rng(seed)
    drop = rng.integers(0, len(base.modality_names), size=len(base))
    present = np.ones_like(base.present)
    present[np.arange(len(base)), drop] = False
    holed = base.with_columns(present=present)
    return GenerativeCompleter(generator).complete(holed)
