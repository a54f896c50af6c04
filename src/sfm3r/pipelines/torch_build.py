"""Which torch build is installed, read from its ``torch/version.py`` without importing torch.

Importing torch costs ~2 s of CPU, most of a rerun whose every stage is cached. Resolving ``--device
auto`` and recording the versions in run.json need only the build's version and GPU backend, which
torch's generated ``version.py`` holds as literals (``__version__ = '2.13.0+cpu'``, ``cuda = None``).
A build without CUDA or ROCm never has ``torch.cuda.is_available()``, so "auto" is "cpu" without the
import; a GPU build is asked through torch itself.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TorchBuild:
    version: str  # torch.__version__, e.g. "2.13.0+cpu"
    cuda: str | None  # torch.version.cuda: the CUDA version it was built with, None for CPU builds
    hip: str | None  # torch.version.hip: ROCm (torch.cuda also drives ROCm GPUs)

    @property
    def has_gpu_backend(self) -> bool:
        """Whether torch.cuda can ever be available with this build (CUDA or ROCm)."""
        return self.cuda is not None or self.hip is not None


@functools.cache
def installed_torch_build() -> TorchBuild | None:
    """The installed torch build; None when torch is missing or its version file is not as expected."""
    if "torch" in sys.modules:  # imported already: ask it
        torch = sys.modules["torch"]
        return TorchBuild(str(torch.__version__), torch.version.cuda, torch.version.hip)
    try:
        spec = importlib.util.find_spec("torch")  # a top-level package: found, not imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return _read_version_file(Path(next(iter(spec.submodule_search_locations))) / "version.py")


def _read_version_file(path: Path) -> TorchBuild | None:
    """The literal assignments of torch's generated version.py -> TorchBuild (None if one is missing)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:  # not a literal: leave it out
                continue
    version, cuda, hip = values.get("__version__"), values.get("cuda", ...), values.get("hip", ...)
    if not isinstance(version, str) or not all(v is None or isinstance(v, str) for v in (cuda, hip)):
        return None  # a key missing (the Ellipsis) or of another type: not the file we know
    return TorchBuild(version, cuda, hip)
