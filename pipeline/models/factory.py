"""One factory for every architecture, and the loaders of the saved prior and deraining model.

Checkpoint files (written by pipeline.training, read with ``torch.load(weights_only=True)``):

- prior.pt: ``{"format": "raincheck-prior/1", "spec": <prior spec dict>, "state_dict": ...}``; a
  ``pretrained_autoencoder`` prior adds ``"config"`` (its diffusers config, which rebuilds the
  architecture without the user's directory) and ``"source"`` (path and sha256 of that directory).
- model.pt: ``{"format": "raincheck-derain/1", "spec": <spec dict>, "state_dict": <EMA weights>,
  "prior_spec": <prior spec dict> | None, "prior_config": <diffusers config> | None}``; the state
  dict holds the prior's weights too when the architecture renders through the prior, so the file
  is self-contained.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

PRIOR_FORMAT = "raincheck-prior/1"
DERAIN_FORMAT = "raincheck-derain/1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def _register_builtins() -> None:
    """Import the architecture modules: each registers itself (explicitly, once) on import."""
    from pipeline.models import classical, fused, masked, prior_net, resnet, timm_unet, vq  # noqa: F401


def parse_spec(spec: BaseModel | dict | str, **overrides: object) -> BaseModel:
    """A validated spec from a params spec, a dict with a ``type`` key or a registered variant name.

    Keyword overrides replace fields (e.g. ``parse_spec("resnet_tiny", channels=8)``).
    """
    from pipeline.models.registry import architecture, variant

    _register_builtins()
    if isinstance(spec, str):
        raw = variant(spec)
    elif isinstance(spec, BaseModel):
        raw = spec.model_dump(mode="json")
    elif isinstance(spec, dict):
        raw = dict(spec)
    else:
        raise TypeError(f"a model spec is a params spec, a dict or a variant name, got {type(spec).__name__}")
    raw.update(overrides)
    if "type" not in raw:
        raise ValueError(f"model spec {raw} has no 'type' key")
    arch = architecture(str(raw["type"]))
    try:
        return arch.spec_class.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"invalid {arch.name} spec: {problems}") from None


def create_model(spec: BaseModel | dict | str, **kwargs: object):
    """Build an untrained model (torch.nn.Module, train mode) from a spec.

    Keyword arguments the builders take: ``prior`` (a loaded prior, for prior_resnet),
    ``load_weights`` (timm_unet: load the spec's local weights file, default True), ``root``
    (directory that relative weight paths are under). Any other keyword overrides a spec field.
    """
    from pipeline.models.registry import architecture

    builder_keys = {"prior", "load_weights", "root"}
    builder_kwargs = {k: v for k, v in kwargs.items() if k in builder_keys}
    overrides = {k: v for k, v in kwargs.items() if k not in builder_keys}
    parsed = parse_spec(spec, **overrides)
    return architecture(parsed.type).builder(parsed, **builder_kwargs)


def read_checkpoint(path: Path | str, expected_format: str) -> dict:
    """Load a raincheck checkpoint dict with ``weights_only=True``; clear errors for anything else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt, truncated or pickled files
        raise CheckpointError(f"{path}: not a readable raincheck checkpoint (corrupt, truncated or foreign): {error}") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise CheckpointError(f"{path}: not a raincheck checkpoint (no 'format' entry); expected {expected_format}")
    if checkpoint["format"] != expected_format:
        raise CheckpointError(f"{path}: is a {checkpoint['format']!r} checkpoint, expected {expected_format!r}")
    return checkpoint


def _load_weights(model, state_dict: dict, path: Path, what: str):
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CheckpointError(f"{path}: the {what} weights do not match the spec stored with them: {' '.join(first[:3])}") from None
    return model


def build_prior(spec: dict, config: dict | None = None):
    """An untrained prior of a saved architecture: a VQAutoencoder from its spec, or a pretrained
    diffusers autoencoder from its spec and the diffusers `config` stored with it (no file read)."""
    if isinstance(spec, dict) and spec.get("type") == "pretrained_autoencoder":
        from pipeline.models.pretrained_prior import prior_from_config

        return prior_from_config(spec, config)
    return create_model(spec)


def load_prior(path: Path | str):
    """The prior in ``prior.pt``: a frozen VQAutoencoder or PretrainedAutoencoderPrior in eval mode (CPU)."""
    path = Path(path)
    checkpoint = read_checkpoint(path, PRIOR_FORMAT)
    try:
        prior = build_prior(checkpoint["spec"], checkpoint.get("config"))
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid prior spec: {error}") from None
    _load_weights(prior, checkpoint["state_dict"], path, "prior")
    return prior.eval().requires_grad_(False)


def _as_evaluated(spec: dict) -> dict:
    """The spec with which a saved model was evaluated and gated: a model of an architecture that
    has a `shower_check` field, saved before that field existed, gets 0 (off), not today's default."""
    if not isinstance(spec, dict) or "shower_check" in spec or not isinstance(spec.get("type"), str):
        return spec
    from pipeline.models.registry import architecture

    _register_builtins()
    try:
        fields = architecture(spec["type"]).spec_class.model_fields
    except ValueError:  # an unknown type: create_model names the registered ones
        return spec
    return {**spec, "shower_check": 0.0} if "shower_check" in fields else spec


def load_derain_model(path: Path | str):
    """The trained deraining model in ``model.pt`` (eval mode, on the CPU).

    Call it as ``model(x)`` with x float32 NCHW in [0, 1] of any height and width; it returns
    float32 NCHW in [0, 1] of the same shape.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, DERAIN_FORMAT)
    prior = None
    try:
        if checkpoint.get("prior_spec") is not None:
            prior = build_prior(checkpoint["prior_spec"], checkpoint.get("prior_config"))
        model = create_model(_as_evaluated(checkpoint["spec"]), prior=prior, load_weights=False)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot rebuild the model it holds: {error}") from None
    return _load_weights(model, checkpoint["state_dict"], path, "model").eval()


def prior_checkpoint(prior, source: dict | None = None) -> dict:
    """The dict saved as prior.pt (a pretrained autoencoder adds its diffusers config and `source`)."""
    checkpoint = {"format": PRIOR_FORMAT, "spec": prior.spec.model_dump(mode="json"), "state_dict": prior.state_dict()}
    config = getattr(prior, "diffusers_config", None)
    if config is not None:
        checkpoint["config"] = config
    if source is not None:
        checkpoint["source"] = source
    return checkpoint


def derain_checkpoint(
    spec: BaseModel, state_dict: dict, prior_spec: BaseModel | None, prior_config: dict | None = None
) -> dict:
    """The dict saved as model.pt (state_dict: the EMA weights, prior included when rendered through;
    prior_config: the diffusers config of a pretrained autoencoder prior)."""
    return {
        "format": DERAIN_FORMAT,
        "spec": spec.model_dump(mode="json"),
        "state_dict": state_dict,
        "prior_spec": prior_spec.model_dump(mode="json") if prior_spec is not None else None,
        "prior_config": prior_config,
    }
