"""DICOMweb source on the maintained `dicomweb-client`: QIDO-RS search, WADO-RS retrieval, STOW-RS upload, signed in
the way hospitals guard their archives (basic, bearer token, client certificate).

Why dicomweb-client: it does multipart, sessions, retries and paging as the standard says; this module adds what
mining needs on top: which studies and series to read, metadata before pixels, and one clear line when the archive
cannot be used. Studies are searched by date range and modality; annotation series (PR, SR, KO, ...) are retrieved
whole, image series as metadata only (pixels are fetched at conversion, for the referenced images alone).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import add_certs_to_session
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bundle.io.dicom import UnreadableError, image_info, read_dataset
from bundle.io.records import FileIssue, ObjectResult
from bundle.pacs.source import ANNOTATION_MODALITIES, ArchiveError, Inspector, pool_map

log = logging.getLogger("bundle.pacs")
T = TypeVar("T")
AS_STORED = (("application/dicom", "*"),)  # WADO-RS in the stored transfer syntax: no transcoding on the server
FATAL_HTTP = {401: "credentials refused: check --dicomweb_auth", 403: "signed in but not allowed", 407: "proxy credentials refused"}


class _Session(requests.Session):
    """A session whose own CA bundle wins: plain requests lets REQUESTS_CA_BUNDLE (set on many hosts) override it."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings


@dataclass
class DICOMwebAuth:
    """How the archive wants us to sign in. Nothing here is ever logged or printed.

    Why secrets from the environment or a file (`password_env`/`password_file`, `token_env`/`token_file`): a literal
    `password`/`token` works, but it shows in the process list and in shell history.
    `kind`: none | basic (username + password) | bearer (token, sent as `Authorization: Bearer ...`). A client
    certificate (mutual TLS) goes with any kind: `client_cert` (PEM; may hold the key too) and `client_key`.
    `ca_bundle`: the CA that signed the server's certificate (a hospital's own CA), else the system's CAs.
    """

    kind: str = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    password_env: str = ""
    password_file: str = ""
    token: str = field(default="", repr=False)
    token_env: str = ""
    token_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_bundle: str = ""

    def __post_init__(self) -> None:  # the command line gives numbers for digit-only values: every field is text
        for f in fields(self):
            v = getattr(self, f.name)
            setattr(self, f.name, "" if v is None else str(v))

    @classmethod
    def of(cls, value: DICOMwebAuth | dict | None) -> DICOMwebAuth:
        """From the config's mapping (`--dicomweb_auth#kind basic ...`); an unknown key is an error, never ignored."""
        if isinstance(value, cls):
            return value
        value = dict(value or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ArchiveError(f"dicomweb_auth: unknown key(s) {unknown}; known keys: {known}")
        return cls(**value)

    def _secret(self, what: str, literal: str, env: str, path: str) -> str:
        if env:
            if env not in os.environ:
                raise ArchiveError(f"dicomweb_auth#{what}_env: environment variable {env} is not set")
            return os.environ[env]
        if path:
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                raise ArchiveError(f"dicomweb_auth#{what}_file: cannot read {path} ({exc.strerror})") from None
        if literal:
            return literal
        raise ArchiveError(f"dicomweb_auth: kind {self.kind} needs {what}_env, {what}_file or {what}")

    def session(self) -> requests.Session:
        """A requests session signed in as configured; dicomweb-client sends every call through it."""
        s = _Session()
        if self.kind == "basic":
            if not self.username:
                raise ArchiveError("dicomweb_auth#username: required for kind basic")
            s.auth = (self.username, self._secret("password", self.password, self.password_env, self.password_file))
        elif self.kind == "bearer":
            s.headers["Authorization"] = "Bearer " + self._secret("token", self.token, self.token_env, self.token_file)
        elif self.kind != "none":
            raise ArchiveError(f"dicomweb_auth#kind: {self.kind!r} is not one of none, basic, bearer")
        for name in ("client_cert", "client_key", "ca_bundle"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise ArchiveError(f"dicomweb_auth#{name}: file {getattr(self, name)} does not exist")
        if self.client_key and not self.client_cert:
            raise ArchiveError("dicomweb_auth#client_key: given without client_cert")
        add_certs_to_session(s, self.ca_bundle or None, self.client_cert or None)
        if self.client_key:
            s.cert = (self.client_cert, self.client_key)
        return s

    def describe(self) -> str:
        """What a log line may say: the method and the user name, never a secret."""
        who = {"basic": f"basic auth as {self.username}", "bearer": "bearer token"}.get(self.kind, "no authentication")
        return who + (" + client certificate" if self.client_cert else "")


def safe_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) if parts.hostname else url


def connect(url: str, auth: DICOMwebAuth | dict | None = None, timeout: float = 60.0) -> DICOMwebClient:
    """A dicomweb-client signed in with `auth`."""
    a = DICOMwebAuth.of(auth)
    log.info("DICOMweb %s: %s", safe_url(url), a.describe())
    session = a.session()
    # Retries in the session (urllib3): a busy archive (429, 503, 504) or a dropped connection is tried again with
    # back-off; a refused certificate or credentials are not. dicomweb-client's own retries would repeat every failure
    # five times over 30 s and log each one with a traceback, so they are off.
    retry = Retry(
        connect=2,
        read=0,
        other=0,
        status=3,
        backoff_factor=0.5,
        status_forcelist=(429, 503, 504),
        allowed_methods=None,
        raise_on_status=False,
    )
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    client = DICOMwebClient(url.rstrip("/"), session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)
    logging.getLogger("retrying").setLevel(logging.ERROR)  # it logs every failed attempt with a traceback, even the last
    return client


def archive_error(url: str, what: str, exc: Exception) -> ArchiveError:
    """One line for a failed call: the URL, the transaction and what went wrong, with a hint when there is one."""
    where = f"DICOMweb {safe_url(url)}: {what}"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = FATAL_HTTP.get(code) or ("no DICOMweb service at this path? check --dicomweb_url" if code == 404 else "")
        return ArchiveError(f"{where} -> HTTP {code} {exc.response.reason}" + (f" ({hint})" if hint else ""))
    if isinstance(exc, requests.exceptions.SSLError):
        return ArchiveError(f"{where} -> TLS handshake failed (server certificate not trusted, or client certificate missing or refused)")
    if isinstance(exc, requests.Timeout):
        return ArchiveError(f"{where} -> no answer in time (timeout)")
    if isinstance(exc, requests.ConnectionError):
        reason = "connection reset during TLS: client certificate missing or refused?" if url.startswith("https") else "unreachable"
        return ArchiveError(f"{where} -> server {reason}")
    return ArchiveError(f"{where} -> {type(exc).__name__}: {exc}")


def _value(item: dict, tag: str, default: str = "") -> str:
    v = item.get(tag, {}).get("Value")
    return str(v[0]) if v else default


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class DICOMwebSource:
    """Mining source over DICOMweb; locations are 'studies/<uid>/series/<uid>/instances/<uid>'.

    Studies are searched by date range and modality (one QIDO-RS query per modality); annotation series are
    retrieved whole, image series as metadata only. The archive refusing us, being unreachable, or matching no
    study is an `ArchiveError` (one line); one object that fails to come is a `retrieve_failed` issue in the report.
    """

    kind = "dicomweb"

    def __init__(
        self,
        url: str,
        date_from: str | None = None,
        date_to: str | None = None,
        modalities: list[str] | None = None,
        auth: DICOMwebAuth | dict | None = None,
        timeout: float = 60.0,
    ):
        self.url = url.rstrip("/")
        self.client = connect(self.url, auth, timeout)
        self.date_from = str(date_from) if date_from else None
        self.date_to = str(date_to) if date_to else None
        self.modalities = sorted(set(modalities or []))

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise archive_error(self.url, what, exc) from None

    def _search(self, what: str, fn: Callable[..., list[dict]], *args: Any, key: str, **kwargs: Any) -> list[dict]:
        """Every page of a QIDO-RS search (servers cap results), stopping when a page brings nothing new.

        Why not dicomweb-client's `get_remaining`: it pages until an empty page, and a server that ignores `offset`
        for some filters (Orthanc 1.10 with ModalitiesInStudy) never sends one.
        """
        seen: dict[str, dict] = {}
        while True:
            page = self._call(what, fn, *args, offset=len(seen) or None, **kwargs)
            new = {_value(item, key): item for item in page if _value(item, key) not in seen}
            if not new:
                return list(seen.values())
            seen.update(new)

    def criteria(self) -> str:
        dates = f"{self.date_from or '...'}-{self.date_to or '...'}" if self.date_from or self.date_to else "any date"
        return f"study date {dates}, modality {'/'.join(self.modalities) or 'any'}"

    def study_uids(self) -> list[str]:
        """QIDO-RS studies by date range and modality (ModalitiesInStudy), every page."""
        base = {"StudyDate": f"{self.date_from or ''}-{self.date_to or ''}"} if self.date_from or self.date_to else {}
        uids: set[str] = set()
        for modality in self.modalities or [None]:
            filters = {**base, **({"ModalitiesInStudy": modality} if modality else {})}
            found = self._search("QIDO-RS studies", self.client.search_for_studies, key="0020000D", search_filters=filters)
            uids.update(_value(s, "0020000D") for s in found)
        if not uids:
            raise ArchiveError(f"DICOMweb {safe_url(self.url)}: no study matches {self.criteria()}")
        return sorted(uids)

    def _walk(self) -> tuple[list[str], list[ObjectResult]]:
        """(locations to retrieve whole, results already complete from series metadata)."""
        fetch: list[str] = []
        results: list[ObjectResult] = []
        for st in self.study_uids():
            series = self._search(f"QIDO-RS studies/{st}/series", self.client.search_for_series, st, key="0020000E")
            for se in sorted(series, key=lambda s: _value(s, "0020000E")):
                se_uid, modality = _value(se, "0020000E"), _value(se, "00080060")
                where = f"studies/{st}/series/{se_uid}"
                if modality in ANNOTATION_MODALITIES:
                    instances = self._search(f"QIDO-RS {where}/instances", self.client.search_for_instances, st, se_uid, key="00080018")
                    fetch += [f"{where}/instances/{_value(i, '00080018')}" for i in instances]
                    continue
                for meta in self._call(f"WADO-RS {where}/metadata", self.client.retrieve_series_metadata, st, se_uid):
                    loc = f"{where}/instances/{_value(meta, '00080018')}"
                    if "60003000" in meta:  # overlay bitmap: needs the whole object
                        fetch.append(loc)
                        continue
                    ds = pydicom.Dataset.from_json(meta, bulk_data_uri_handler=lambda *a: b"")
                    results.append(ObjectResult(location=loc, object="image", image=image_info(ds, loc)))
        return fetch, results

    def _retrieve(self, location: str) -> bytes:
        _, st, _, se, _, sop = location.split("/")
        return _to_bytes(self.client.retrieve_instance(st, se, sop, media_types=AS_STORED))

    def read_bytes(self, location: str) -> bytes:
        try:
            return self._retrieve(location)
        except requests.RequestException as exc:
            raise archive_error(self.url, f"WADO-RS {location}", exc) from None

    def _inspect_one(self, inspect: Inspector, location: str) -> ObjectResult:
        """One object: an archive that refuses us stops the run; one object that fails is its own issue."""
        try:
            raw = self._retrieve(location)
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code in FATAL_HTTP:
                raise archive_error(self.url, f"WADO-RS {location}", exc) from None
            return ObjectResult(location, issue=FileIssue(location, "retrieve_failed", f"WADO-RS: HTTP {exc.response.status_code}"))
        except requests.RequestException as exc:
            raise archive_error(self.url, f"WADO-RS {location}", exc) from None
        except Exception as exc:  # noqa: BLE001 - an object the client cannot parse must not stop the run
            return ObjectResult(location, issue=FileIssue(location, "retrieve_failed", f"WADO-RS: {type(exc).__name__}: {exc}"))
        return inspect(raw, location)

    def collect(self, inspect: Inspector, workers: int = 2, progress: bool = True) -> list[ObjectResult]:
        fetch, results = self._walk()
        log.info(
            "DICOMweb %s: %d objects listed, %d to retrieve whole (%s)",
            safe_url(self.url),
            len(fetch) + len(results),
            len(fetch),
            self.criteria(),
        )
        results += pool_map(
            lambda loc: self._inspect_one(inspect, loc), sorted(fetch), max(1, workers), "mining (dicomweb)", progress, processes=False
        )
        return sorted(results, key=lambda r: r.location)


def push_folder(url: str, folder: str | Path, auth: DICOMwebAuth | dict | None = None, batch: int = 50) -> dict[str, int]:
    """STOW-RS every DICOM file under a folder (what a modality or an export tool does), in batches.

    Returns counts: `stored` and `failed` as the archive reports them, `skipped` for files that are not DICOM or
    are damaged (found here, so the archive never sees them).
    """
    client = connect(url, auth)
    counts = {"stored": 0, "failed": 0, "skipped": 0}
    pending: list[pydicom.Dataset] = []
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for k, p in enumerate(files):
        try:
            pending.append(read_dataset(p))
        except UnreadableError:
            counts["skipped"] += 1
        if pending and (len(pending) == batch or k == len(files) - 1):
            try:
                res = client.store_instances(pending)
            except requests.RequestException as exc:
                raise archive_error(url, "STOW-RS studies", exc) from None
            counts["stored"] += len(res.get("ReferencedSOPSequence", []))
            counts["failed"] += len(res.get("FailedSOPSequence", []))
            pending = []
    return counts
