"""The `Source` protocol every archive implements, and the worker-pool helper they share.

Why a protocol with an injected inspector: a source knows where objects live and how to fetch them
(folder, DICOMweb, DeepLesion release); mining knows how to read them. The miner hands its inspector
(`bytes, location -> ObjectResult`) to `Source.collect`, so sources never import mining and data flows
one way: io <- pacs <- mining.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

from bundle.io.records import ObjectResult

Inspector = Callable[[bytes, str], ObjectResult | None]  # None: the object belongs to another shard
# Series that hold measurements and key images (GSPS and SR live in their own series, Modality PR / SR).
ANNOTATION_MODALITIES = frozenset({"PR", "SR", "KO", "SEG", "RTSTRUCT", "DOC", "OT_ANN"})
T = TypeVar("T")
R = TypeVar("R")


class ArchiveError(SystemExit):
    """An archive that cannot be used at all (unreachable, refused, wrong credentials, nothing matches): one line.

    Why a SystemExit: `python -m monai.bundle run` has no error handler of ours; Python prints a SystemExit's
    message as one line on stderr and exits 1, with no traceback. Python callers catch it by name
    (`except ArchiveError`); `except Exception` does not. One object that fails is an issue in the report, never this.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@runtime_checkable
class Source(Protocol):
    """An archive to mine. `collect` returns one result per object, sorted by location (a stable order)."""

    kind: str

    def collect(self, inspect: Inspector, workers: int = 1, progress: bool = False) -> list[ObjectResult]: ...

    def read_bytes(self, location: str) -> bytes:
        """The whole object at a location `collect` reported (conversion reads the referenced images again)."""
        ...


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask a scheduler such as SLURM sets), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def progress_bar(iterable: Iterable[T], total: int, desc: str, enabled: bool) -> Iterable[T]:
    """tqdm over an iterable when enabled; the iterable itself otherwise."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="obj", mininterval=1.0)


def pool_map(
    fn: Callable[[T], R], jobs: list[T], workers: int, desc: str, progress: bool, processes: bool = True, chunksize: int | None = None
) -> list[R]:
    """`map` in order over a process (CPU-bound parsing) or thread (network-bound) pool; in-line for one worker.

    `workers` 0 (or None) = one per CPU core this process may use. Process chunks are large (jobs / workers / 8):
    a header read takes well under a millisecond, so small chunks would spend the time on inter-process traffic."""
    workers = workers or cpu_count()
    if chunksize is None:
        chunksize = max(8, len(jobs) // (workers * 8))
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in progress_bar(jobs, len(jobs), desc, progress)]
    pool_cls: Any = ProcessPoolExecutor if processes else ThreadPoolExecutor
    with pool_cls(workers) as pool:
        it: Iterator[R] = pool.map(fn, jobs, chunksize=chunksize) if processes else pool.map(fn, jobs)
        return list(progress_bar(it, len(jobs), desc, progress))
