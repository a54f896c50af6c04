"""The installed torch build, read without importing torch (a cached rerun must not pay its ~2 s import)."""

from __future__ import annotations

from pathlib import Path

import torch

from sfm3r.pipelines.torch_build import TorchBuild, _read_version_file, installed_torch_build
from sfm3r.pipelines.validation import check_device

CPU_FILE = """from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'rocm', 'xpu']
__version__ = '2.13.0+cpu'
debug = False
cuda: Optional[str] = None
git_version = 'cf30153c4c131c8164ee7798e5022d810682e2cb'
hip: Optional[str] = None
"""


def test_the_version_file_of_a_cpu_and_a_cuda_build_is_read(tmp_path):
    path = tmp_path / "version.py"
    path.write_text(CPU_FILE)
    assert _read_version_file(path) == TorchBuild("2.13.0+cpu", None, None)
    assert not _read_version_file(path).has_gpu_backend
    path.write_text(CPU_FILE.replace("cuda: Optional[str] = None", "cuda: Optional[str] = '12.8'"))
    assert _read_version_file(path) == TorchBuild("2.13.0+cpu", "12.8", None) and _read_version_file(path).has_gpu_backend
    path.write_text(CPU_FILE.replace("hip: Optional[str] = None", "hip = '6.3.1'"))
    assert _read_version_file(path).has_gpu_backend  # ROCm drives torch.cuda too


def test_an_unexpected_version_file_gives_none_so_that_torch_is_asked(tmp_path):
    path = tmp_path / "version.py"
    assert _read_version_file(path) is None  # missing
    path.write_text("__version__ = '2.0'\n")  # no cuda/hip entries
    assert _read_version_file(path) is None
    path.write_text(CPU_FILE.replace("cuda: Optional[str] = None", "cuda = get_cuda()"))  # not a literal
    assert _read_version_file(path) is None
    path.write_text("this is not python (")
    assert _read_version_file(path) is None


def test_the_installed_builds_version_file_says_what_torch_says():
    own = TorchBuild(str(torch.__version__), torch.version.cuda, torch.version.hip)
    assert _read_version_file(Path(torch.__file__).parent / "version.py") == own
    assert installed_torch_build() == own
    assert check_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert check_device("cpu") == "cpu"
