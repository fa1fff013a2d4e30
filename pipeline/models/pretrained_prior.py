"""A user's own pre-trained diffusers autoencoder as the content prior (`pretrained_autoencoder`).

:class:`PretrainedAutoencoderPrior` puts a diffusers ``AutoencoderKL`` or ``AutoencoderTiny``
behind the interface that `prior_resnet` and the training loop use from the VQ prior:

- ``encode(x)``: float32 NCHW in [0, 1], sides multiples of ``stride`` -> latent (N, D, H/s, W/s):
  the posterior mean (AutoencoderKL) or the latents (AutoencoderTiny), shifted and scaled by the
  model's own ``shift_factor`` / ``scaling_factor`` (so latents have roughly unit variance, as the
  diffusion models that use them expect, and ``train.latent_weight`` keeps a similar meaning).
- ``decode(latent)``: -> float32 NCHW in [0, 1].
- ``forward(x)``: (reconstruction, latent); ``stride``, ``check_shape``; frozen, eval mode.
- ``quantizer`` is None: there is no codebook, so `prior_resnet` renders its predicted latent
  directly and only the latent-matching loss ties it to the prior's latent space.

Diffusers autoencoders take and give images in [-1, 1]; the conversion happens here. Weights are
read only from local safetensors files (``local_files_only=True``; pickled ``.bin`` files are
refused); :func:`prior_from_config` rebuilds the architecture from the config stored in
prior.pt / model.pt, so a saved checkpoint never needs the user's directory again.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from pipeline import layout
from pipeline.config import ParamsError, PretrainedAutoencoderSpec
from pipeline.models.resnet import ResBlock
from pipeline.models.vq import check_prior_input
from pipeline.params.models import autoencoder_stride

CONFIG_FILE = layout.AUTOENCODER_CONFIG
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CLASS_NAMES = {"autoencoder_kl": "AutoencoderKL", "autoencoder_tiny": "AutoencoderTiny"}
ALLOWED = (
    "prior.model.path must be a local diffusers autoencoder directory written by save_pretrained "
    f"({CONFIG_FILE} + {WEIGHTS_FILE}), with prior.model.kind autoencoder_kl (AutoencoderKL) "
    "or autoencoder_tiny (AutoencoderTiny)"
)


def diffusers_class(kind: str) -> type:
    """The diffusers model class for a `prior.model.kind`."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    return {"autoencoder_kl": AutoencoderKL, "autoencoder_tiny": AutoencoderTiny}[kind]


def raw_latent(autoencoder: nn.Module, kind: str, images: torch.Tensor) -> torch.Tensor:
    """The diffusers latent of float32 NCHW images in [-1, 1], before shift and scaling."""
    encoded = autoencoder.encode(images)
    return encoded.latent_dist.mean if kind == "autoencoder_kl" else encoded.latents


def _widest(kind: str, config: dict) -> int:
    """Channels of the encoder's last (lowest-resolution) level."""
    return config["block_out_channels" if kind == "autoencoder_kl" else "encoder_block_out_channels"][-1]


def plain_config(config) -> dict:
    """A diffusers config as a JSON-able dict (lists, numbers, strings): storable with weights_only.

    Private entries (``_name_or_path``, ``_diffusers_version``, ...) are dropped, except the class name.
    """
    public = {key: value for key, value in dict(config).items() if not key.startswith("_") or key == "_class_name"}
    return json.loads(json.dumps(public))


class RestorationEncoder(nn.Module):
    """Trainable: (N, 3, H, W) in [0, 1] -> a latent (N, D, H/s, W/s) in the prior's latent space.

    A copy of the prior's encoding half (its weights, or a fresh initialisation) followed by
    `blocks` residual blocks on the latent, at the encoder's widest channel count between two 1×1
    convolutions; the last one starts at zero, so that training begins from the prior's own latent.
    """

    def __init__(self, autoencoder: nn.Module, kind: str, scale: float, shift: float, width: int, blocks: int):
        super().__init__()
        self.autoencoder = autoencoder
        self.kind, self.scale, self.shift = kind, scale, shift
        latent_dim = autoencoder.config["latent_channels"]
        tail = nn.Conv2d(width, latent_dim, 1)
        nn.init.zeros_(tail.weight)
        nn.init.zeros_(tail.bias)
        self.refine = nn.Sequential(nn.Conv2d(latent_dim, width, 1), *(ResBlock(width) for _ in range(blocks)), tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latent = (raw_latent(self.autoencoder, self.kind, x * 2.0 - 1.0) - self.shift) * self.scale
        return latent + self.refine(latent)


class PretrainedAutoencoderPrior(nn.Module):
    """A frozen diffusers autoencoder with the VQ prior's interface (see the module docstring)."""

    quantizer = None  # no codebook: prior_resnet renders its predicted latent as is

    def __init__(self, spec: PretrainedAutoencoderSpec, autoencoder: nn.Module, config: dict):
        super().__init__()
        self.spec = spec
        self.autoencoder = autoencoder
        self.diffusers_config = config  # stored with the weights: rebuilds the architecture offline
        self.stride = autoencoder_stride(spec.kind, config)
        self.latent_dim = int(config["latent_channels"])
        self.scale = float(config.get("scaling_factor") or 1.0)
        self.shift = float(config.get("shift_factor") or 0.0)
        self.eval().requires_grad_(False)

    def check_shape(self, x: torch.Tensor) -> None:
        check_prior_input(x, self.stride, f"the {CLASS_NAMES[self.spec.kind]}'s downsampling")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> latent (N, D, H/s, W/s), shifted and scaled (unit-variance-like)."""
        self.check_shape(x)
        return (raw_latent(self.autoencoder, self.spec.kind, x * 2.0 - 1.0) - self.shift) * self.scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (N, D, h, w) -> image (N, 3, h·s, w·s) float32 in [0, 1]."""
        image = (self.autoencoder.decode(latent / self.scale + self.shift).sample + 1.0) / 2.0
        # The value is clamped to [0, 1], the gradient passes straight through: a model rendering
        # through this decoder keeps learning where the decoder overshoots the range.
        return image + (image.clamp(0.0, 1.0) - image).detach()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction in [0, 1], latent) of x float32 NCHW in [0, 1]."""
        latent = self.encode(x)
        return self.decode(latent), latent

    def restoration_encoder(self, blocks: int, init_from_prior: bool) -> RestorationEncoder:
        """A trainable encoder into this prior's latent space (see :class:`RestorationEncoder`)."""
        if init_from_prior:
            autoencoder = copy.deepcopy(self.autoencoder)
        else:
            autoencoder = type(self.autoencoder).from_config(self.autoencoder.config)
        # Only the encoding half is trained; the decoding half used is the frozen prior's own.
        del autoencoder.decoder
        if hasattr(autoencoder, "post_quant_conv"):
            del autoencoder.post_quant_conv
        autoencoder.requires_grad_(True)
        width = _widest(self.spec.kind, self.diffusers_config)
        return RestorationEncoder(autoencoder, self.spec.kind, self.scale, self.shift, width, blocks)


def model_directory(spec: PretrainedAutoencoderSpec, root: Path | str) -> Path:
    """The checked diffusers directory of `spec.path` (relative to `root`); ParamsError naming
    prior.model.path when it is missing, not a diffusers autoencoder of `spec.kind`, or has no
    safetensors weights."""
    directory = Path(spec.path)
    if not directory.is_absolute():
        directory = Path(root) / directory
    expected = CLASS_NAMES[spec.kind]
    if not directory.exists():
        raise ParamsError(f"prior.model.path: {directory} does not exist; {ALLOWED}")
    if not directory.is_dir():
        raise ParamsError(f"prior.model.path: {directory} is a file, not a directory; {ALLOWED}")
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise ParamsError(f"prior.model.path: {directory} has no {CONFIG_FILE}, so it is not a diffusers model directory; {ALLOWED}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ParamsError(f"prior.model.path: {config_file} is not readable JSON ({error}); {ALLOWED}") from None
    declared = config.get("_class_name") if isinstance(config, dict) else None
    if declared != expected:
        raise ParamsError(
            f"prior.model.path: {config_file} declares {declared!r}, but prior.model.kind "
            f"{spec.kind!r} needs {expected!r}; allowed kinds: autoencoder_kl (AutoencoderKL), "
            "autoencoder_tiny (AutoencoderTiny)"
        )
    if config.get("in_channels", 3) != 3 or config.get("out_channels", 3) != 3:
        raise ParamsError(f"prior.model.path: {config_file} describes a {config.get('in_channels')}-channel "
                          "autoencoder; the prior works on RGB images (3 channels in and out)")
    if not (directory / WEIGHTS_FILE).is_file():
        raise ParamsError(f"prior.model.path: {directory} has no {WEIGHTS_FILE} (weights are read from "
                          "safetensors only; pickled .bin files are refused)")
    return directory


def load_pretrained_prior(spec: PretrainedAutoencoderSpec, root: Path | str) -> PretrainedAutoencoderPrior:
    """The user's autoencoder at `spec.path`: frozen, eval mode, float32, on the CPU. Local files only."""
    directory = model_directory(spec, root)
    model_class = diffusers_class(spec.kind)
    try:
        autoencoder = model_class.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, torch_dtype=torch.float32,
            low_cpu_mem_usage=False,  # plain loading: no dependency on `accelerate`
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        raise ParamsError(f"prior.model.path: diffusers could not load {directory} as {model_class.__name__}: {error}") from None
    try:
        return PretrainedAutoencoderPrior(spec, autoencoder, plain_config(autoencoder.config))
    except (KeyError, TypeError, ValueError) as error:
        raise ParamsError(f"prior.model.path: {directory / CONFIG_FILE} is not a usable {model_class.__name__} config: {error}") from None


def prior_from_config(spec: dict | PretrainedAutoencoderSpec, config: object) -> PretrainedAutoencoderPrior:
    """An untrained prior of the architecture stored in a checkpoint (its weights are loaded next).

    Reads no file: `config` is the diffusers config saved with the weights.
    """
    spec = PretrainedAutoencoderSpec.model_validate(spec)
    if not isinstance(config, dict):
        raise ValueError("a pretrained_autoencoder prior needs the diffusers config stored with its weights; none was found")
    return PretrainedAutoencoderPrior(spec, diffusers_class(spec.kind).from_config(config), config)
