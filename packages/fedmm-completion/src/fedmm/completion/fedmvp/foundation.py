"""Frozen foundation models of FedMVP: feature extraction and cross-modal completion.

FedMVP (arXiv 2406.11048) gives every client a set of large *pretrained* models that it keeps frozen:

- :class:`FrozenCLIP` wraps a ``transformers`` ``CLIPModel``. It is the frozen feature extractor whose
  image and text embeddings feed the small learnable joint encoder and classifier, and it is the
  image/text embedder used to score generated data.
- :class:`Captioner` wraps a ``BlipForConditionalGeneration`` and its tokenizer. It completes a sample
  whose *text* is missing: it captions the image, continuing a class-aware "coarse" prompt (see
  :func:`coarse_prompt`) with fine details ("coarse-to-fine prompt augmentation", spec section 3.1).
- :class:`TextToImage` wraps a ``diffusers`` ``StableDiffusionPipeline`` (our offline stand-in for
  DALL-E 2). It completes a sample whose *image* is missing from a prompt (coarse class template + the
  available caption). (The paper also generates the server's CKA probe set from class prompts;
  here the probe is the server's real public split, see :class:`~fedmm.completion.fedmvp.technique.FedMVP`.)

Why frozen: these models are never trained and never communicated. Their parameters are not parameter
groups of the federated model, so they never appear in a client's update or in the global state; every
client loads the same weights locally. Each wrapper therefore sets ``requires_grad_(False)`` on every
parameter, stays in eval mode (``train()`` is a no-op) and runs under ``torch.no_grad()``.

Models are never downloaded: ``from_pretrained`` only accepts a local folder written by
``save_pretrained`` and passes ``local_files_only=True``. ``from_config`` (and
``TextToImage.from_components``) build a model with random weights, which is what the tests use.
``transformers`` and ``diffusers`` are imported lazily, inside the methods, so importing this module is
cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.api import ConfigError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Captioner",
    "FrozenCLIP",
    "TextToImage",
    "coarse_prompt",
]

#: Pixel mean and standard deviation of OpenAI CLIP (also used by BLIP's image processor).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


#: Stable Diffusion's DDIM settings; diffusers warns about (and rewrites) DDIMScheduler's own defaults.
_SD_DDIM_DEFAULTS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


# --------------------------------------------------------------------------------------------- helpers
def _model_dir(path: str | Path, marker: str, what: str) -> Path:
    """Return ``path`` as a folder holding ``marker``, or raise a :class:`ConfigError` naming the path."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        problem = "does not exist" if not folder.exists() else "is not a folder"
        raise ConfigError(
            f"{what}: model path {str(folder)!r} {problem}. Point it at a local folder written by "
            f"`save_pretrained` (models are never downloaded)."
        )
    if not (folder / marker).is_file():
        raise ConfigError(
            f"{what}: {str(folder)!r} is not a model folder (no {marker}). Point it at a local folder "
            f"written by `save_pretrained` (models are never downloaded)."
        )
    return folder


def _load_error(folder: Path, what: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"{what}: could not load the model folder {str(folder)!r} ({type(exc).__name__}: {exc}). "
        f"Point it at a local folder written by `save_pretrained` (models are never downloaded)."
    )


def _freeze(module: nn.Module) -> None:
    module.requires_grad_(False)
    module.eval()


def _check_images(images: torch.Tensor, what: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"{what}: expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ConfigError(f"{what}: expected float images in [0, 1], got dtype {images.dtype}")


def _preprocess(images: torch.Tensor, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Resize (B, 3, H, W) images in [0, 1] to ``size`` and normalise them with CLIP's mean/std."""
    x = images.to(device=device, dtype=torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


class _Frozen(nn.Module):
    """An ``nn.Module`` that never trains: ``train()`` keeps it (and every submodule) in eval mode."""

    def train(self, mode: bool = True) -> Self:
        return super().train(False)

    def _first_param(self) -> torch.Tensor:
        return next(self.parameters())


def coarse_prompt(label: str, category: str | None = None) -> str:
    """The coarse, class-aware prefix that the captioner continues ("coarse-to-fine" prompt augmentation).

    ``coarse_prompt("cardinal", "bird")`` → ``"a photo of a cardinal, a type of bird,"``;
    ``coarse_prompt("cardinal")`` → ``"a photo of a cardinal,"``.
    """
    label = label.strip().replace("_", " ")
    if not label:
        raise ConfigError("coarse_prompt: the class label must be a non-empty string")
    if category is not None and category.strip():
        return f"a photo of a {label}, a type of {category.strip()},"
    return f"a photo of a {label},"


# --------------------------------------------------------------------------------------------- CLIP
class FrozenCLIP(_Frozen):
    """Frozen CLIP image/text encoder; ``encode_*`` give projected ``(B, dim)`` embeddings (unnormalised)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model: Any = model
        config = model.config
        self.dim: int = int(config.projection_dim)
        self.image_size: int = int(config.vision_config.image_size)
        _freeze(self)

    @classmethod
    def from_config(cls, config: Any) -> FrozenCLIP:
        """Random weights from a ``CLIPConfig`` or a dict of its fields (``text_config`` etc.)."""
        from transformers import CLIPConfig, CLIPModel

        if isinstance(config, Mapping):
            config = CLIPConfig(**dict(config))
        if not isinstance(config, CLIPConfig):
            raise ConfigError(
                f"FrozenCLIP.from_config: expected a CLIPConfig or a dict, got {type(config).__name__}"
            )
        return cls(CLIPModel(config))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> FrozenCLIP:
        """Load a ``CLIPModel`` from a local folder written by ``save_pretrained``."""
        from transformers import CLIPModel

        folder = _model_dir(path, "config.json", "FrozenCLIP")
        try:
            model = CLIPModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _load_error(folder, "FrozenCLIP", exc) from exc
        return cls(model)

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: (B, 3, H, W) float in [0, 1] → (B, dim) projected image embeddings."""
        _check_images(images, "FrozenCLIP.encode_image")
        p = self._first_param()
        pixels = _preprocess(images, self.image_size, p.dtype, p.device)
        # transformers 5 returns a ModelOutput from get_image_features; use the towers directly (stable API).
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.visual_projection(pooled)

    @torch.no_grad()
    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``input_ids``: (B, L) token ids (CLIP tokenizer) → (B, dim) projected text embeddings."""
        if input_ids.ndim != 2:
            raise ConfigError(
                f"FrozenCLIP.encode_text: expected input_ids of shape (B, L), got {input_ids.shape}"
            )
        device = self._first_param().device
        mask = attention_mask.to(device) if attention_mask is not None else None
        pooled = self.model.text_model(input_ids=input_ids.to(device), attention_mask=mask).pooler_output
        return self.model.text_projection(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)


# --------------------------------------------------------------------------------------------- BLIP captioner
class Captioner(_Frozen):
    """Frozen BLIP captioner: image (+ optional coarse prompt) → caption, greedy decoding by default."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        self.model: Any = model
        self.tokenizer: Any = tokenizer
        self.image_size: int = int(model.config.vision_config.image_size)
        _freeze(self)

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any) -> Captioner:
        """Random weights from a ``BlipConfig`` (or dict); ``tokenizer`` must match its text vocabulary."""
        from transformers import BlipConfig, BlipForConditionalGeneration

        if isinstance(config, Mapping):
            config = BlipConfig(**dict(config))
        if not isinstance(config, BlipConfig):
            raise ConfigError(
                f"Captioner.from_config: expected a BlipConfig or a dict, got {type(config).__name__}"
            )
        text_config: Any = config.text_config
        vocab = int(text_config.vocab_size)
        if len(tokenizer) > vocab:
            raise ConfigError(
                f"Captioner.from_config: the tokenizer has {len(tokenizer)} tokens but the text decoder's "
                f"vocab_size is {vocab}"
            )
        return cls(BlipForConditionalGeneration(config), tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Captioner:
        """Load the BLIP model and the tokenizer that ``save_pretrained`` wrote into the same local folder."""
        from transformers import AutoTokenizer, BlipForConditionalGeneration

        folder = _model_dir(path, "config.json", "Captioner")
        if not (folder / "tokenizer_config.json").is_file():
            raise ConfigError(
                f"Captioner: {str(folder)!r} holds no tokenizer (no tokenizer_config.json). Save the model "
                f"and its tokenizer into the same local folder with `save_pretrained` (models are never "
                f"downloaded)."
            )
        try:
            model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _load_error(folder, "Captioner", exc) from exc
        return cls(model, tokenizer)

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def _special_ids(self) -> set[int]:
        cfg = self.model.config.text_config
        ids = {cfg.bos_token_id, cfg.pad_token_id, cfg.sep_token_id, cfg.eos_token_id}
        ids.update(self.tokenizer.all_special_ids)
        return {int(i) for i in ids if isinstance(i, int)}

    @torch.no_grad()
    def caption(
        self,
        images: torch.Tensor,
        prompts: Sequence[str] | None = None,
        max_new_tokens: int = 12,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Caption (B, 3, H, W) images in [0, 1]; with ``prompts`` (one per image) the caption continues them.

        BLIP replaces the prompt's leading ``[CLS]`` with its decoder start token, drops the trailing
        ``[SEP]`` and returns the prompt tokens followed by the generated ones, so a prompted caption starts
        with the prompt *as the tokenizer sees it* (lower-cased; words missing from the vocabulary become
        ``[UNK]`` and disappear when special tokens are skipped). Decoding is greedy unless
        ``generate_kwargs`` (passed to BLIP's ``generate``) say otherwise.
        """
        _check_images(images, "Captioner.caption")
        batch = images.shape[0]
        if prompts is not None and len(prompts) != batch:
            raise ConfigError(
                f"Captioner.caption: got {len(prompts)} prompts for {batch} images (need one each)"
            )
        if max_new_tokens < 1:
            raise ConfigError(f"Captioner.caption: max_new_tokens must be >= 1, got {max_new_tokens}")
        p = self._first_param()
        pixels = _preprocess(images, self.image_size, p.dtype, p.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1}
        kwargs.update(generate_kwargs)

        sequences: list[list[int]] = [[] for _ in range(batch)]
        if prompts is None:
            out = self.model.generate(pixel_values=pixels, **kwargs)
            sequences = [row.tolist() for row in out]
        else:
            # BLIP drops the *last* prompt token (assumed [SEP]); with right padding that would be a pad
            # token, so prompts are batched only with prompts of the same token length (no padding at all).
            encoded = [self.tokenizer(text, add_special_tokens=True)["input_ids"] for text in prompts]
            groups: dict[int, list[int]] = {}
            for i, ids in enumerate(encoded):
                groups.setdefault(len(ids), []).append(i)
            for members in groups.values():
                input_ids = torch.tensor([encoded[i] for i in members], dtype=torch.long, device=p.device)
                mask = torch.ones_like(input_ids)
                out = self.model.generate(
                    pixel_values=pixels[members], input_ids=input_ids, attention_mask=mask, **kwargs
                )
                for i, row in zip(members, out, strict=True):
                    sequences[i] = row.tolist()

        special = self._special_ids()
        texts = [[t for t in seq if t not in special] for seq in sequences]
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in texts]

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> list[str]:
        return self.caption(images, prompts)


# --------------------------------------------------------------------------------------------- text → image
class TextToImage:
    """Frozen text-to-image generator around a ``diffusers`` ``StableDiffusionPipeline``.

    Not an ``nn.Module`` (the pipeline is not one); :meth:`parameters` iterates over the frozen weights of its
    UNet, VAE and text encoder.
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline: Any = pipeline
        pipeline.set_progress_bar_config(disable=True)
        for module in self._modules():
            _freeze(module)

    def _modules(self) -> list[nn.Module]:
        names = ("unet", "vae", "text_encoder")
        return [m for m in (getattr(self.pipeline, n, None) for n in names) if isinstance(m, nn.Module)]

    def parameters(self) -> Iterator[nn.Parameter]:
        for module in self._modules():
            yield from module.parameters()

    def train(self, mode: bool = True) -> TextToImage:
        """No-op: the generator stays in eval mode."""
        return self

    def eval(self) -> TextToImage:
        return self

    @property
    def training(self) -> bool:
        return any(m.training for m in self._modules())

    @property
    def default_size(self) -> int:
        """Image side the UNet was configured for: ``unet.config.sample_size * vae_scale_factor``."""
        return int(self.pipeline.unet.config.sample_size) * int(self.pipeline.vae_scale_factor)

    @classmethod
    def from_components(
        cls, *, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any
    ) -> TextToImage:
        """Assemble a pipeline (no safety checker, no feature extractor) from already-built components."""
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        return cls(pipe)

    @classmethod
    def from_config(
        cls,
        *,
        unet: Mapping[str, Any],
        vae: Mapping[str, Any],
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Mapping[str, Any] | None = None,
    ) -> TextToImage:
        """Random weights: ``unet``/``vae`` are ``UNet2DConditionModel``/``AutoencoderKL`` config dicts,
        ``text_encoder`` a ``CLIPTextConfig`` (or dict), ``tokenizer`` a built ``CLIPTokenizer``,
        ``scheduler`` overrides of Stable Diffusion's ``DDIMScheduler`` settings."""
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        if isinstance(text_encoder, Mapping):
            text_encoder = CLIPTextConfig(**dict(text_encoder))
        if not isinstance(text_encoder, CLIPTextConfig):
            raise ConfigError(
                f"TextToImage.from_config: text_encoder must be a CLIPTextConfig or a dict, "
                f"got {type(text_encoder).__name__}"
            )
        cross = UNet2DConditionModel.from_config(dict(unet)).config.cross_attention_dim
        if cross != text_encoder.hidden_size:
            raise ConfigError(
                f"TextToImage.from_config: the UNet's cross_attention_dim ({cross}) must equal the text "
                f"encoder's hidden_size ({text_encoder.hidden_size})"
            )
        return cls.from_components(
            unet=UNet2DConditionModel.from_config(dict(unet)),
            vae=AutoencoderKL.from_config(dict(vae)),
            text_encoder=CLIPTextModel(text_encoder),
            tokenizer=tokenizer,
            scheduler=DDIMScheduler.from_config({**_SD_DDIM_DEFAULTS, **dict(scheduler or {})}),
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextToImage:
        """Load a ``StableDiffusionPipeline`` from a local folder written by ``save_pretrained``."""
        from diffusers import StableDiffusionPipeline

        folder = _model_dir(path, "model_index.json", "TextToImage")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                folder, local_files_only=True, safety_checker=None, requires_safety_checker=False
            )
        except (OSError, ValueError) as exc:
            raise _load_error(folder, "TextToImage", exc) from exc
        return cls(pipe)

    def save_pretrained(self, path: str | Path) -> None:
        self.pipeline.save_pretrained(path, safe_serialization=True)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        steps: int = 2,
        seed: int = 0,
        size: int | None = None,
        guidance_scale: float = 7.5,
    ) -> torch.Tensor:
        """Generate one image per prompt: (B, 3, size, size) float32 in [0, 1], reproducible for a given seed.

        The initial latents come from a CPU ``torch.Generator`` seeded with ``seed``, whatever the device.
        """
        if isinstance(prompts, str) or len(prompts) == 0:
            raise ConfigError("TextToImage.generate: prompts must be a non-empty list of strings")
        if steps < 1:
            raise ConfigError(f"TextToImage.generate: steps must be >= 1, got {steps}")
        side = self.default_size if size is None else int(size)
        factor = int(self.pipeline.vae_scale_factor)
        if side < factor or side % factor:
            raise ConfigError(
                f"TextToImage.generate: size must be a positive multiple of {factor}, got {side}"
            )
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        out = self.pipeline(
            prompt=list(prompts),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=side,
            width=side,
            generator=generator,
            output_type="pt",
        )
        images: torch.Tensor = out.images
        return images.float().clamp(0.0, 1.0).cpu()
