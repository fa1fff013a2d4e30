"""params.yaml `ingest`: where the raw photos come from and the limits they are read under."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from pipeline.params.base import Strict


class _PackageSource(Strict):
    """What the package-based sources share: each package named once."""

    @field_validator("packages", check_fields=False)
    @classmethod
    def _unique(cls, packages: list[str]) -> list[str]:
        return _no_repeats(packages)


class PypiSource(_PackageSource):
    """Photos shipped inside PyPI wheels (`pip download --no-deps --only-binary=:all:`)."""

    type: Literal["pypi"]
    packages: list[Literal["scikit-image", "scikit-learn", "sporco"]] = Field(min_length=1)
    required: bool = False  # when false, a wheel that cannot be downloaded is skipped with a note


class DebianSource(_PackageSource):
    """Photos shipped inside Debian packages (`apt-get download`, read with `dpkg-deb`)."""

    type: Literal["debian"]
    packages: list[
        Literal[
            "plasma-workspace-wallpapers",
            "mate-backgrounds",
            "lomiri-wallpapers-16.04",
            "lomiri-wallpapers-20.04",
            "tuxpaint-data",
            "enlightenment-data",  # optional: a 401 MB download for 14 photos
        ]
    ] = Field(min_length=1)
    required: bool = False  # when false, a machine without apt-get skips this source with a note


class FolderSource(Strict):
    """Any folder of the user's own photos (searched recursively; relative to the workspace root)."""

    type: Literal["folder"]
    path: str = Field(min_length=1)
    licence: str = Field("unknown (user-supplied)", min_length=1)


def _no_repeats(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"packages listed more than once: {repeated}")
    return names


Source = Annotated[Union[PypiSource, DebianSource, FolderSource], Field(discriminator="type")]


class Ingest(Strict):
    sources: list[Source] = Field(min_length=1)
    short_side: int = Field(512, ge=32, le=8192)  # larger photos are scaled down to this short side
    max_pixels: int = Field(120_000_000, ge=1_000_000)  # decompression-bomb guard (width * height)
    max_file_bytes: int = Field(200_000_000, ge=1_000_000)  # larger files are rejected before reading
    min_images: int = Field(8, ge=1)  # fewer usable photos than this fails the ingest
