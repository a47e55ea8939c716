"""Folder source: every file under a root, any layout, recursive, with or without extensions."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from bundle.io.records import ObjectResult
from bundle.pacs.source import Inspector, pool_map


def _inspect_file(root: str, inspect: Inspector, location: str) -> ObjectResult | None:
    """An inspector with `from_file` reads what it needs of the file (a header only, often); others get the bytes."""
    from_file = getattr(inspect, "from_file", None)
    if from_file is not None:
        return from_file(Path(root) / location, location)
    return inspect((Path(root) / location).read_bytes(), location)


class FolderSource:
    """A PACS export on disk. Locations are POSIX paths relative to the root, sorted: a stable order."""

    kind = "folder"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"mining source folder {self.root} does not exist")

    def locations(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for f in filenames:
                out.append(Path(dirpath, f).relative_to(self.root).as_posix())
        return sorted(out)

    def read_bytes(self, location: str) -> bytes:
        return (self.root / location).read_bytes()

    def collect(self, inspect: Inspector, workers: int = 1, progress: bool = False) -> list[ObjectResult]:
        """Every file through the inspector, in worker processes (parsing is CPU-bound); `inspect` must pickle.

        An inspector may return None for an object it leaves to another shard; those are dropped here."""
        results = pool_map(partial(_inspect_file, str(self.root), inspect), self.locations(), workers, "mining", progress)
        return [r for r in results if r is not None]
