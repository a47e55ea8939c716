"""DIMSE source (pynetdicom) for archives without DICOMweb: C-FIND studies and series by date range and modality,
C-GET (or C-MOVE into a storage SCP this source starts) into a local cache folder, then read as the folder source does.

Why a cache folder: DIMSE has no metadata-only retrieval, so the matching series come whole, once; conversion then
reads the referenced images from disk, and a rerun with the same criteria skips series already complete there.
Only series of the requested modalities (MR) and the annotation series (PR, SR, KO, ...) are retrieved.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt, sop_class

from bundle.io.records import FileIssue, ObjectResult
from bundle.pacs.source import ANNOTATION_MODALITIES, ArchiveError, Inspector, pool_map

log = logging.getLogger("bundle.pacs")
FIND = sop_class.StudyRootQueryRetrieveInformationModelFind
GET = sop_class.StudyRootQueryRetrieveInformationModelGet
MOVE = sop_class.StudyRootQueryRetrieveInformationModelMove
# What a brain MR study and its measurements hold; C-GET proposes each (with every transfer syntax) for storage.
STORAGE = [
    getattr(sop_class, name)
    for name in (
        "MRImageStorage", "EnhancedMRImageStorage", "LegacyConvertedEnhancedMRImageStorage", "CTImageStorage",
        "EnhancedCTImageStorage", "SecondaryCaptureImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage", "GrayscaleSoftcopyPresentationStateStorage",
        "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage", "Comprehensive3DSRStorage",
        "KeyObjectSelectionDocumentStorage", "SegmentationStorage", "RTStructureSetStorage", "EncapsulatedPDFStorage",
    )
]  # fmt: skip
PENDING, SUCCESS, WARNING_SUBOPS = (0xFF00, 0xFF01), 0x0000, 0xB000


@dataclass
class _Series:
    study: str
    uid: str
    modality: str
    expected: int | None  # NumberOfSeriesRelatedInstances, when the archive says

    @property
    def folder(self) -> str:
        return f"{self.study}/{self.uid}"


def _inspect_file(root: str, inspect: Inspector, location: str) -> ObjectResult:
    return inspect((Path(root) / location).read_bytes(), location)


def _no_delay(event: Any) -> None:
    """TCP_NODELAY on every association: without it each C-STORE sub-operation waits ~40 ms on a delayed ACK."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """pynetdicom logs every PDU at INFO and each failure as several lines; this source says what happened in one."""
    logger = logging.getLogger("pynetdicom")
    level = logger.level
    if enabled:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class DIMSESource:
    """Mining source over DIMSE; locations are '<StudyUID>/<SeriesUID>/<SOPUID>.dcm' under `cache_dir`.

    `retrieve`: `get` (C-GET on the query association: nothing to register on the archive) or `move` (C-MOVE to
    `calling_aet`, which the archive must know as this host and `move_port`; the source listens there meanwhile).
    Unreachable archive, association rejected, a failed C-FIND, or no matching study: an `ArchiveError` (one line).
    A series that arrives incomplete is a `retrieve_failed` issue in the report, counted.
    """

    kind = "dimse"

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str = "ORTHANC",
        calling_aet: str = "MINING",
        cache_dir: str | Path = "data/dimse_cache",
        date_from: str | None = None,
        date_to: str | None = None,
        modalities: list[str] | None = None,
        retrieve: str = "get",
        move_port: int = 11113,
        timeout: float = 30.0,
        quiet: bool = True,
    ):
        if retrieve not in ("get", "move"):
            raise ArchiveError(f"dimse_retrieve: {retrieve!r} is not one of get, move")
        for name, aet in (("dimse_called_aet", called_aet), ("dimse_calling_aet", calling_aet)):
            if not 0 < len(str(aet).strip()) <= 16:
                raise ArchiveError(f"{name}: AE title {aet!r} must be 1 to 16 characters")
        self.host, self.port = str(host), int(port)
        self.called_aet, self.calling_aet = str(called_aet), str(calling_aet)
        self.cache = Path(cache_dir)
        self.date_from = str(date_from) if date_from else None
        self.date_to = str(date_to) if date_to else None
        self.modalities = sorted(set(modalities or []))
        self.retrieve, self.move_port = retrieve, int(move_port)
        self.timeout, self.quiet = float(timeout), quiet
        self.where = f"DIMSE {self.called_aet}@{self.host}:{self.port}"

    def criteria(self) -> str:
        dates = f"{self.date_from or '...'}-{self.date_to or '...'}" if self.date_from or self.date_to else "any date"
        return f"study date {dates}, modality {'/'.join(self.modalities) or 'any'}"

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        return ae

    @contextmanager
    def _association(self, ae: AE, **kwargs: Any) -> Iterator[Any]:
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, **kwargs)
        if assoc.is_aborted:  # an archive that rejects and closes at once can reach pynetdicom as an abort: ask once more
            assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, **kwargs)
        if not assoc.is_established:
            if assoc.is_rejected:
                raise ArchiveError(
                    f"{self.where}: association rejected (does the archive know calling AE title {self.calling_aet}, "
                    f"and is it called {self.called_aet}? check --dimse_calling_aet / --dimse_called_aet)"
                )
            try:  # pynetdicom reports a refused TCP connection as an abort: tell the two apart
                socket.create_connection((self.host, self.port), timeout=self.timeout).close()
            except OSError as exc:
                raise ArchiveError(f"{self.where}: server unreachable ({exc.strerror or exc})") from None
            raise ArchiveError(f"{self.where}: association aborted by the archive (not a DICOM service on this port?)")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, assoc: Any, query: Dataset, what: str) -> list[Dataset]:
        found = []
        for status, identifier in assoc.send_c_find(query, FIND):
            code = status.get("Status") if status else None
            if code in PENDING:
                found.append(identifier)
            elif code != SUCCESS:
                got = "no answer (timeout or association aborted)" if code is None else f"status 0x{code:04X}"
                raise ArchiveError(f"{self.where}: C-FIND {what} failed: {got}")
        return found

    def find_series(self) -> list[_Series]:
        """C-FIND studies (date range, ModalitiesInStudy; one query per modality), then their series."""
        ae = self._ae()
        ae.add_requested_context(FIND)
        with self._association(ae) as assoc:
            studies: set[str] = set()
            for modality in self.modalities or [""]:
                q = Dataset()
                q.QueryRetrieveLevel, q.StudyInstanceUID, q.ModalitiesInStudy = "STUDY", "", modality
                q.StudyDate = f"{self.date_from or ''}-{self.date_to or ''}" if self.date_from or self.date_to else ""
                studies.update(str(d.StudyInstanceUID) for d in self._find(assoc, q, "studies"))
            if not studies:
                raise ArchiveError(f"{self.where}: no study matches {self.criteria()}")
            out = []
            for st in sorted(studies):
                q = Dataset()
                q.QueryRetrieveLevel, q.StudyInstanceUID, q.SeriesInstanceUID = "SERIES", st, ""
                q.Modality, q.NumberOfSeriesRelatedInstances = "", ""
                for d in self._find(assoc, q, f"series of study {st}"):
                    n = d.get("NumberOfSeriesRelatedInstances")
                    out.append(_Series(st, str(d.SeriesInstanceUID), str(d.get("Modality", "")), int(n) if n not in (None, "") else None))
        wanted = set(self.modalities) | ANNOTATION_MODALITIES
        return sorted((s for s in out if not self.modalities or s.modality in wanted), key=lambda s: s.folder)

    def _store(self, event: Any) -> int:
        """C-STORE handler (C-GET sub-operations and the C-MOVE SCP): the dataset as received, as a Part 10 file."""
        ds = event.dataset
        path = self.cache / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            with tmp.open("wb") as f:
                f.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(f, event.file_meta)
                f.write(event.request.DataSet.getvalue())
            tmp.replace(path)  # a run killed mid-write leaves no half file under a real name
        except OSError as exc:
            log.warning("%s: cannot write %s: %s", self.where, path, exc.strerror)
            return 0xA700
        return SUCCESS

    def _cached(self, s: _Series) -> int:
        d = self.cache / s.folder
        return sum(1 for _ in d.glob("*.dcm")) if d.is_dir() else 0

    def _retrieve_one(self, assoc: Any, s: _Series) -> str:
        """C-GET or C-MOVE one series; '' when complete, else why not (for the report)."""
        q = Dataset()
        q.QueryRetrieveLevel, q.StudyInstanceUID, q.SeriesInstanceUID = "SERIES", s.study, s.uid
        responses = assoc.send_c_get(q, GET) if self.retrieve == "get" else assoc.send_c_move(q, self.calling_aet, MOVE)
        last, failed = None, 0
        for status, _ in responses:
            if not status:
                return f"C-{self.retrieve.upper()}: no answer (timeout or association aborted)"
            last, failed = status.get("Status"), int(status.get("NumberOfFailedSuboperations", 0) or 0)
        if last not in (SUCCESS, WARNING_SUBOPS):
            return f"C-{self.retrieve.upper()}: status 0x{last:04X}" if last is not None else f"C-{self.retrieve.upper()}: no response"
        got = self._cached(s)
        if failed or (s.expected is not None and got < s.expected):
            return f"C-{self.retrieve.upper()}: {got} of {s.expected if s.expected is not None else '?'} instances ({failed} sub-operations failed)"
        return ""

    def _retrieve_all(self, series: list[_Series]) -> dict[str, str]:
        """Every series not yet complete in the cache; series folder -> problem, for those that stayed incomplete."""
        todo = [s for s in series if s.expected is None or self._cached(s) < s.expected]
        if not todo:
            return {}
        ae, handlers, server = self._ae(), [(evt.EVT_C_STORE, self._store), (evt.EVT_CONN_OPEN, _no_delay)], None
        if self.retrieve == "get":
            ae.add_requested_context(GET)
            for uid in STORAGE:
                ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES)
            kwargs: dict[str, Any] = {"ext_neg": [build_role(uid, scp_role=True) for uid in STORAGE], "evt_handlers": handlers}
        else:
            ae.add_requested_context(MOVE)
            for uid in STORAGE:
                ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
            try:
                server = ae.start_server(("", self.move_port), block=False, evt_handlers=handlers)
            except OSError as exc:
                raise ArchiveError(f"dimse_move_port: cannot listen on port {self.move_port} for C-MOVE ({exc.strerror})") from None
            kwargs = {}
        try:
            with self._association(ae, **kwargs) as assoc:
                problems = {s.folder: self._retrieve_one(assoc, s) for s in todo}
        finally:
            if server is not None:
                server.shutdown()
        return {k: v for k, v in problems.items() if v}

    def read_bytes(self, location: str) -> bytes:
        return (self.cache / location).read_bytes()

    def collect(self, inspect: Inspector, workers: int = 1, progress: bool = False) -> list[ObjectResult]:
        with _quiet(self.quiet):
            series = self.find_series()
            problems = self._retrieve_all(series)
        log.info("%s: %d series match %s; %d incomplete", self.where, len(series), self.criteria(), len(problems))
        locations = sorted(p.relative_to(self.cache).as_posix() for s in series for p in (self.cache / s.folder).glob("*.dcm"))
        results = pool_map(partial(_inspect_file, str(self.cache), inspect), locations, workers, "mining (dimse)", progress)
        results += [ObjectResult(folder, issue=FileIssue(folder, "retrieve_failed", why)) for folder, why in problems.items()]
        return sorted(results, key=lambda r: r.location)
