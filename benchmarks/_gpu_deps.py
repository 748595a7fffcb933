"""Pack what benchmarks/gpu_e2e.py needs and the lent GPU machine's image lacks into .gpu_deps/site.tar.xz
(a helper, not a benchmark).

The device machine (docs/benchmarks.md, gpu_e2e.py) runs the image's python3 (3.12, torch, transformers,
peft, safetensors, numpy, pyarrow, grpcio, aiohttp, protobuf, ninja, ...) and can fetch nothing. It has no
Ray, DeepSpeed, pydantic, omegaconf, hjson, jsonschema or latex2sympy2_extended. This script, run here:
  * downloads the cp312 x86-64 wheels of the compiled ones (ray, pydantic_core, rpds-py) at the versions
    installed in .venv, and drops what the run never imports from Ray (Java jars, rllib, serve, tune,
    train, data, llm): the whole Ray wheel is 79 MB, over the 64 MiB a device run may carry;
  * copies the pure-Python ones (and their dist-info) from .venv;
  * writes one tar.xz, ignored by git (.git/info/exclude), to name in the device run's `carry`.

On the device machine (one command; `carry: [".gpu_deps"]`):
    mkdir -p /tmp/site && tar xJf .gpu_deps/site.tar.xz -C /tmp/site && \
    PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 benchmarks/gpu_e2e.py
Ray's workers inherit PYTHONPATH from the driver's environment. Checked here with a bare Python 3.12 (the
bundle's Ray starts a local cluster, a task sees PYTHONPATH and imports pydantic); with the image's torch
(2.11, not the pinned 2.13) and transformers (5.17) it has not been tried.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ["ray", "pydantic_core", "rpds-py"]  # cp312 wheels, at .venv's versions
PURE = ["deepspeed", "pydantic", "annotated-types", "typing-inspection", "omegaconf", "antlr4-python3-runtime",
        "latex2sympy2_extended", "hjson", "jsonschema", "jsonschema-specifications", "referencing", "math-verify"]
RAY_UNUSED = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/tune/", "ray/train/", "ray/data/", "ray/llm/")


def download(names: list[str], into: Path) -> list[Path]:
    pins = [f"{n}=={md.version(n)}" for n in names]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--platform", "manylinux2014_x86_64", "-d", str(into), *pins],
                   check=True)
    return sorted(into.glob("*.whl"))


def copy_installed(name: str, site: Path) -> None:
    """A pure-Python distribution's files, as .venv installed them."""
    dist = md.distribution(name)
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        if f.parts[0] in ("..", "bin") or "__pycache__" in f.parts or not src.is_file():
            continue
        (site / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, site / f)


def main() -> int:
    out = ROOT / ".gpu_deps"
    out.mkdir(exist_ok=True)
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.is_dir() and "/.gpu_deps/" not in (exclude.read_text() if exclude.exists() else ""):
        with exclude.open("a") as fh:
            fh.write("/.gpu_deps/\n")
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        site.mkdir()
        for whl in download(COMPILED, wheels):
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    if info.filename.startswith(RAY_UNUSED):
                        continue
                    path = Path(z.extract(info, site))
                    mode = info.external_attr >> 16
                    if mode:
                        path.chmod(mode & 0o777)  # ray's gcs_server and raylet must stay executable
        for name in PURE:
            copy_installed(name, site)
        with tarfile.open(out / "site.tar.xz", "w:xz") as tar:
            tar.add(site, arcname=".")
    size = (out / "site.tar.xz").stat().st_size
    print(f"wrote {out / 'site.tar.xz'}: {size / 2**20:.1f} MiB (a device run carries at most 64 MiB, the repo "
          "included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
