"""The base of every params model: Strict (frozen, unknown keys forbidden), ParamsError."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ParamsError(ValueError):
    """A params file that cannot be used; the message says which key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
