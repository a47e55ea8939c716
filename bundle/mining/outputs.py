"""Mining's output folder, written so that a run killed at any point and run again gives the same bytes.

Why: an archive-sized mining run is killed (a SLURM time limit, a pre-empted node, Ctrl-C). Every file is
first written under `<output_dir>/.partial/` and renamed into place (`os.replace`, atomic on one file system)
only once complete, so the output folder holds old complete files or new complete files, never half of one;
the next run starts by deleting `.partial/`. Converted files found in `reuse` folders (the shards' outputs
for a merge; the output folder itself with `resume: true`) are taken as they are instead of converted again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PARTIAL = ".partial"


class Staging:
    def __init__(self, output_dir: Path, reuse: list[Path] | None = None):
        self.final = Path(output_dir)
        self.dir = self.final / PARTIAL
        shutil.rmtree(self.dir, ignore_errors=True)  # what a killed run left half-written
        self.reuse_dirs = [Path(d) for d in reuse or []]

    def reuse(self, staged: Path) -> bool:
        """True when `staged` (a path under `.partial/`) needs no conversion: copied from a reuse folder, or already final."""
        rel = Path(staged).relative_to(self.dir)
        for d in self.reuse_dirs:
            src = d / rel
            if src.is_file():
                if d.resolve() != self.final.resolve():
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, staged)
                return True
        return False

    def final_path(self, staged: str) -> str:
        """A path under `.partial/` as it will read once committed (reports name the final file)."""
        prefix = str(self.dir)
        return str(self.final) + staged[len(prefix) :] if staged.startswith(prefix) else staged

    def write_text(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def commit(self) -> None:
        """Rename every staged file into place (sorted: deterministic), then drop `.partial/`."""
        if not self.dir.is_dir():
            return
        for src in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            dest = self.final / src.relative_to(self.dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        shutil.rmtree(self.dir, ignore_errors=True)
