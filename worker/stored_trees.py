"""A directory tree in the artifact store: its files under one prefix, then an index of their names.

The index is written last, so a prefix without it is an unfinished upload and is never read; a
download lands in a scratch directory renamed at the end, so one cut short is never taken for the
tree. Training checkpoints (worker/checkpoint_store.py) and a job's hand-over between workers
(worker/handoff.py) are stored this way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from infra.storage import get_store

INDEX = "files.json"


def upload_tree(where: str, root: Path) -> list[str]:
    """Copy every file under `root` to `where/<relative name>`, then the index; returns the names."""
    store = get_store()
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    for name in names:
        store.put_file(f"{where}/{name}", root / name)
    store.put_bytes(f"{where}/{INDEX}", json.dumps(names).encode())
    return names


def download_tree(where: str, dest: Path) -> Path:
    """The tree stored at `where` as `dest` (replaced if present)."""
    store = get_store()
    names = json.loads(store.get_bytes(f"{where}/{INDEX}"))
    partial = dest.with_name(f".partial-{dest.name}")
    shutil.rmtree(partial, ignore_errors=True)
    for name in names:
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        store.download(f"{where}/{name}", partial / name)
    shutil.rmtree(dest, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)  # an empty tree is still a directory
    partial.rename(dest)
    return dest


def delete_tree(where: str) -> bool:
    """Delete a stored tree, its index first (it stops counting as complete); False if none was."""
    store = get_store()
    try:
        names = json.loads(store.get_bytes(f"{where}/{INDEX}"))
    except Exception:
        return False  # already deleted, or never finished uploading
    store.delete(f"{where}/{INDEX}")
    for name in names:
        store.delete(f"{where}/{name}")
    return True
