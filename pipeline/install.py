"""Install raincheck's requirements into the virtual environment running this module (`make venv`).

    python -m pipeline.install [--requirements requirements.txt] [--pip-only]

uv installs in parallel, from its cache, and byte-compiles on every core: a fresh environment took
86 s here against 229 s with pip plus `compileall`, one after the other (README, "Quickstart"). uv does not read pip's
configuration, so the indexes, find-links, constraints and CA bundle that pip is configured with
(`pip config list`: files and PIP_* variables) are passed on to it, and it picks the best version
over all indexes, as pip does. Where uv cannot be installed (no index that has it) or fails, pip
installs instead, then `compileall` byte-compiles on every core.

Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: requirements.txt and the editable install
PIP_INSTALL = ("-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile")

# pip's configuration key -> uv's option; a key that holds several values (space-separated) gives
# the option once per value.
UV_OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
              "constraint": "--constraint"}  # fmt: skip


def pip_settings(python: str = sys.executable) -> dict[str, list[str]]:
    """{key: values} of pip's configuration: its files, then PIP_* variables (`:env:`), which win."""
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False).stdout
    settings: dict[str, list[str]] = {}
    for line in sorted(listed.splitlines(), key=lambda line: line.startswith(":env:")):
        name, _, value = line.partition("=")
        if not value:
            continue
        key = name.rsplit(".", 1)[-1]
        settings[key] = shlex.split(value.strip().strip("'\""))
    return settings


def uv_arguments(settings: dict[str, list[str]]) -> list[str]:
    """uv pip install options equivalent to pip's `settings`."""
    arguments = ["--index-strategy", "unsafe-best-match"]  # pip's choice: the best version on any index
    for key, option in UV_OPTIONS.items():
        for value in settings.get(key, []):
            arguments += [option, value]
    return arguments


def _run(command: list[str], env: dict | None = None) -> bool:
    return subprocess.run(command, env=env, check=False).returncode == 0


def install_with_uv(requirements: Path, settings: dict[str, list[str]]) -> bool:
    """uv into this environment (from pip's indexes), then the requirements and raincheck itself."""
    if not _run([sys.executable, *PIP_INSTALL, "uv"]):
        return False
    env = dict(os.environ)
    if settings.get("cert"):  # pip's CA bundle (a proxy's certificate, say) for uv's downloads too
        env.setdefault("SSL_CERT_FILE", settings["cert"][0])
    uv = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", sys.executable, *uv_arguments(settings)]
    return _run([*uv, "--compile-bytecode", "-r", str(requirements)], env) and _run([*uv, "--no-deps", "-e", str(ROOT)], env)


def install_with_pip(requirements: Path) -> bool:
    """pip, without byte-compiling (it compiles on one core), then compileall on every core. A few
    files that packages ship as data do not compile (pip skips them silently too): not fatal."""
    pip = [sys.executable, *PIP_INSTALL]
    if not (_run([*pip, "-r", str(requirements)]) and _run([*pip, "--no-deps", "-e", str(ROOT)])):
        return False
    folders = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], capture_output=True, check=False)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt", help="default: the checkout's")
    parser.add_argument("--pip-only", action="store_true", help="install with pip (+ compileall), not uv")
    args = parser.parse_args(argv)
    if sys.prefix == sys.base_prefix:
        parser.error(f"run it with a virtual environment's python, not {sys.executable}")
    if not args.requirements.is_file():
        parser.error(f"--requirements: {args.requirements} is not a file")
    if not args.pip_only:
        if install_with_uv(args.requirements, pip_settings()):
            return 0
        print("[raincheck] uv could not install the requirements: installing with pip instead", file=sys.stderr)
    return 0 if install_with_pip(args.requirements) else 1


if __name__ == "__main__":
    sys.exit(main())
