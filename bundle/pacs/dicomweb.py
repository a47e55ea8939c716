"""DICOMweb client (QIDO-RS, WADO-RS, STOW-RS over `requests`) and the mining source built on it.

Why our own small client: the three calls mining needs are a few lines each over `requests`, and
keeping them here lets errors name the URL and the status code. The source searches studies by date
range and modality, lists their series, retrieves annotation objects (PR, SR, KO, ...) whole, and
image series as metadata only (pixels are fetched later, for the referenced images alone).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom
import requests

from bundle.io.dicom import image_info
from bundle.io.records import ObjectResult
from bundle.pacs.source import Inspector, pool_map

ANNOTATION_MODALITIES = {"PR", "SR", "KO", "SEG", "RTSTRUCT", "DOC", "OT_ANN"}


class DICOMwebError(RuntimeError):
    pass


def _multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """Bodies of a multipart/related response (RFC 2387), in order."""
    boundary = None
    for param in content_type.split(";"):
        k, _, v = param.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise DICOMwebError(f"multipart response without boundary: {content_type!r}")
    parts = []
    for chunk in body.split(b"--" + boundary.encode()):
        if chunk in (b"", b"--", b"--\r\n") or chunk.startswith(b"--"):
            continue
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


class DICOMwebClient:
    def __init__(self, url: str, timeout: float = 60.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def _get(self, path: str, params: dict | None = None, accept: str = "application/dicom+json") -> requests.Response:
        r = self.session.get(f"{self.url}/{path}", params=params, headers={"Accept": accept}, timeout=self.timeout)
        if r.status_code >= 400:
            raise DICOMwebError(f"GET {self.url}/{path} -> HTTP {r.status_code}: {r.text[:200]}")
        return r

    def qido(self, path: str, params: dict | None = None) -> list[dict]:
        r = self._get(path, params)
        return r.json() if r.content else []

    def search_studies(self, date_from: str | None = None, date_to: str | None = None, modality: str | None = None) -> list[dict]:
        params: dict[str, Any] = {"includefield": "00080020"}
        if date_from or date_to:
            params["StudyDate"] = f"{date_from or ''}-{date_to or ''}"
        if modality:
            params["ModalitiesInStudy"] = modality
        return self.qido("studies", params)

    def search_series(self, study_uid: str) -> list[dict]:
        return self.qido(f"studies/{study_uid}/series", {"includefield": "0008103E"})

    def search_instances(self, study_uid: str, series_uid: str) -> list[dict]:
        return self.qido(f"studies/{study_uid}/series/{series_uid}/instances")

    def series_metadata(self, study_uid: str, series_uid: str) -> list[dict]:
        return self._get(f"studies/{study_uid}/series/{series_uid}/metadata").json()

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        r = self._get(f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", accept='multipart/related; type="application/dicom"')
        parts = _multipart_parts(r.content, r.headers.get("Content-Type", ""))
        if len(parts) != 1:
            raise DICOMwebError(f"WADO-RS {sop_uid}: expected 1 part, got {len(parts)}")
        return parts[0]

    def store(self, payloads: Iterable[bytes], batch: int = 50) -> dict[str, int]:
        """STOW-RS in batches; returns counts of stored and failed instances as the server reports them."""
        stored = failed = 0
        items = list(payloads)
        for i in range(0, len(items), batch):
            boundary = uuid.uuid4().hex
            body = (
                b"".join(
                    b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in items[i : i + batch]
                )
                + b"--"
                + boundary.encode()
                + b"--\r\n"
            )
            r = self.session.post(
                f"{self.url}/studies",
                data=body,
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                    "Accept": "application/dicom+json",
                },
                timeout=self.timeout,
            )
            try:  # a partial failure (some objects rejected) still answers with the STOW response body
                res = r.json() if r.content else {}
            except ValueError:
                res = None
            if r.status_code >= 400 and not isinstance(res, dict):
                raise DICOMwebError(f"STOW-RS -> HTTP {r.status_code}: {r.text[:200]}")
            res = res or {}
            stored += len(res.get("00081199", {}).get("Value", []))
            failed += len(res.get("00081198", {}).get("Value", []))
        return {"stored": stored, "failed": failed}


def _value(item: dict, tag: str, default: str = "") -> str:
    v = item.get(tag, {}).get("Value")
    return str(v[0]) if v else default


class DICOMwebSource:
    """Mining source over DICOMweb; locations are 'studies/<uid>/series/<uid>/instances/<uid>'.

    Studies are searched by date range and (one) modality; annotation series are retrieved whole, image
    series as metadata only (pixels are fetched at conversion, for the referenced images alone).
    """

    kind = "dicomweb"

    def __init__(self, url: str, date_from: str | None = None, date_to: str | None = None, modalities: list[str] | None = None):
        self.client = DICOMwebClient(url)
        self.date_from = str(date_from) if date_from else None
        self.date_to = str(date_to) if date_to else None
        self.modality = modalities[0] if modalities and len(modalities) == 1 else None

    def read_bytes(self, location: str) -> bytes:
        p = location.split("/")
        return self.client.retrieve_instance(p[1], p[3], p[5])

    def _walk(self) -> tuple[list[str], list[ObjectResult]]:
        """(locations to retrieve whole, results already complete from series metadata)."""
        studies = sorted(_value(s, "0020000D") for s in self.client.search_studies(self.date_from, self.date_to, self.modality))
        fetch: list[str] = []
        results: list[ObjectResult] = []
        for st in studies:
            for se in sorted(self.client.search_series(st), key=lambda s: _value(s, "0020000E")):
                se_uid, modality = _value(se, "0020000E"), _value(se, "00080060")
                if modality in ANNOTATION_MODALITIES:
                    for inst in self.client.search_instances(st, se_uid):
                        fetch.append(f"studies/{st}/series/{se_uid}/instances/{_value(inst, '00080018')}")
                    continue
                for meta in self.client.series_metadata(st, se_uid):
                    loc = f"studies/{st}/series/{se_uid}/instances/{_value(meta, '00080018')}"
                    if "60003000" in meta:  # overlay bitmap: needs the whole object
                        fetch.append(loc)
                        continue
                    ds = pydicom.Dataset.from_json(meta, bulk_data_uri_handler=lambda *a: b"")
                    results.append(ObjectResult(location=loc, object="image", image=image_info(ds, loc)))
        return fetch, results

    def collect(self, inspect: Inspector, workers: int = 2, progress: bool = True) -> list[ObjectResult]:
        fetch, results = self._walk()

        def one(loc: str) -> ObjectResult:
            return inspect(self.read_bytes(loc), loc)

        results += pool_map(one, sorted(fetch), max(1, workers), "mining (dicomweb)", progress, processes=False)
        return sorted(results, key=lambda r: r.location)


def push_folder(url: str, folder: str | Path) -> dict[str, int]:
    """STOW-RS every file under a folder (what a modality or an export tool does); non-DICOM files are skipped by the server."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return DICOMwebClient(url).store(p.read_bytes() for p in files)
