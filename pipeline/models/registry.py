"""Explicit registration of architectures (by their params ``type:``) and of named variants.

Each architecture module registers its builder with :func:`register_architecture`; tiny variants
for tests register with :func:`register_variant`. A second registration under the same name is
an error, never a silent replacement. Lookups of unknown names list the registered ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its params spec class (pydantic) and its builder."""

    name: str
    spec_class: type
    builder: Callable


_ARCHITECTURES: dict[str, Architecture] = {}
_VARIANTS: dict[str, dict] = {}


def register_architecture(name: str, spec_class: type) -> Callable[[Callable], Callable]:
    """Decorator: register `builder(spec, **kwargs) -> nn.Module` under the params `type:` name."""

    def decorate(builder: Callable) -> Callable:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered (by {_ARCHITECTURES[name].builder.__module__})")
        _ARCHITECTURES[name] = Architecture(name, spec_class, builder)
        return builder

    return decorate


def register_variant(name: str, spec: dict) -> None:
    """Register a named spec (e.g. ``resnet_tiny``) that :func:`create_model` accepts by name."""
    if name in _VARIANTS or name in _ARCHITECTURES:
        raise ValueError(f"model variant {name!r} is already registered")
    if "type" not in spec:
        raise ValueError(f"variant {name!r} needs a 'type' key")
    _VARIANTS[name] = dict(spec)


def architecture(name: str) -> Architecture:
    """The registered architecture `name`; unknown names raise ValueError listing the valid ones."""
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model type {name!r}; registered types: {', '.join(architecture_names())}")
    return _ARCHITECTURES[name]


def variant(name: str) -> dict:
    """A copy of the registered variant's spec dict; unknown names list the valid ones."""
    if name not in _VARIANTS:
        raise ValueError(
            f"unknown model {name!r}; registered variants: {', '.join(variant_names())}; "
            f"types: {', '.join(architecture_names())}"
        )
    return dict(_VARIANTS[name])


def architecture_names() -> list[str]:
    return sorted(_ARCHITECTURES)


def variant_names() -> list[str]:
    return sorted(_VARIANTS)
