"""Cache integrity: every kind of corruption is detected, the shard moved aside and its units recomputed;
a full disk is a plain OSError naming the file, with no temp file left and no crash inside HDF5."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sfm3r.errors import CacheError
from sfm3r.io import cache

sys.path.insert(0, str(Path(__file__).parent))
from cache_worker import CONFIG, KIND, make_pair, unit_keys  # noqa: E402


def _write(root: Path, n: int = 6, max_units: int = 3) -> cache.Store:
    store = cache.open_store(root, KIND, CONFIG)
    with store.writer(max_units=max_units) as w:
        for key in unit_keys(n):
            cache.write_pair_result(w, key, make_pair(key, 2000))
    return store


def _flip_middle(data: bytearray) -> None:
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 7] ^= 0x01


def _zero_block(data: bytearray) -> None:
    start = len(data) // 3
    data[start : start + 4096] = bytes(4096)


def _truncate(data: bytearray) -> None:
    del data[len(data) - 100 :]


@pytest.mark.parametrize("damage", [_flip_middle, _zero_block, _truncate], ids=["flipped", "zeroed", "truncated"])
def test_damaged_shard_is_quarantined_and_recomputed(tmp_path, caplog, damage):
    first = _write(tmp_path)
    shard = first.shard_files()[0]
    lost = {k for k in unit_keys(6) if first._index[k] == [shard]}
    first.close()
    data = bytearray(shard.read_bytes())
    damage(data)
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"):
        store = cache.open_store(tmp_path, KIND, CONFIG)
    assert "unreadable" in caplog.text and "checksum" in caplog.text
    assert (store.path / cache.CORRUPT / shard.name).exists() and not shard.exists()
    assert store.keys() == set(unit_keys(6)) - lost
    for key in store.keys():  # what is left reads back exactly
        np.testing.assert_array_equal(cache.read_pair_result(store, key).xy_i, make_pair(key, 2000).xy_i)


def test_unit_changed_after_indexing_fails_its_checksum(tmp_path, caplog):
    """Bytes of a unit overwritten after the shard was indexed (h5py still reads them): never returned."""
    import h5py

    store = _write(tmp_path, n=2, max_units=10)
    key = unit_keys(1)[0]
    with h5py.File(store.shard_files()[0], "r+") as f:
        matches = f["units"][key]["matches"]
        matches[:10] = np.zeros(10, matches.dtype)
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"), pytest.raises(CacheError, match="rerun"):
        store.read(key)  # a CacheError (one line in the CLI), and a KeyError for callers that recompute
    assert not store.has(key) and "does not match its checksum" in caplog.text


@pytest.mark.parametrize("error", [RuntimeError("h5py: bad symbol table"), TypeError("NoneType"), KeyError("meta")])
def test_any_exception_while_reading_quarantines(tmp_path, caplog, monkeypatch, error):
    store = _write(tmp_path, n=2, max_units=10)
    key = unit_keys(1)[0]

    def broken(group):
        raise error

    monkeypatch.setattr(cache, "_read_group", broken)
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"), pytest.raises(KeyError):
        store.read(key)
    assert type(error).__name__ in caplog.text
    assert list((store.path / cache.CORRUPT).iterdir())


def test_disk_full_on_commit_is_an_oserror_naming_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    store = cache.open_store(tmp_path, KIND, CONFIG)
    real_open = open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def open_full(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullFile(handle) if "w" in mode and str(path).endswith(".tmp") else handle

    w = store.writer()
    w.add("first", cache.Unit("x", {"v": np.zeros(1000)}))
    monkeypatch.setattr("builtins.open", open_full)
    with pytest.raises(OSError) as raised:
        w.commit()
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC and str(store.path / cache.SHARDS) in raised.value.filename
    assert list((store.path / cache.SHARDS).iterdir()) == []
    assert len(cache.open_store(tmp_path, KIND, CONFIG)) == 0


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0:
        return False
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


def test_disk_full_on_a_small_tmpfs_is_a_clean_error(tmp_path):
    """A real ENOSPC (2 MiB tmpfs): the writer raises OSError, leaves no temp file, the process lives on."""
    mount = tmp_path / "small"
    if not _can_mount_tmpfs(mount):
        pytest.skip("needs root and permission to mount a tmpfs")
    try:
        code = (
            "import sys, numpy as np\n"
            "from sfm3r.io import cache\n"
            f"store = cache.open_store({str(mount)!r}, 'pairs-test', {{}})\n"
            "w = store.writer(max_units=1)\n"
            "try:\n"
            "    for k in range(10):\n"
            "        w.add(f'k{k}', cache.Unit('x', {'v': np.ones(1 << 17)}))\n"
            "except OSError as e:\n"
            "    print('OSERROR', e.errno, e.filename); sys.exit(3)\n"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 3, done.stdout + done.stderr  # not 139 (segfault), not a traceback
        assert f"OSERROR {errno.ENOSPC}" in done.stdout
        assert not list(mount.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
