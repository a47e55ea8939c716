"""Test helpers: a throwaway Orthanc (Debian orthanc + orthanc-dicomweb) on loopback, TLS certificates made with
openssl, and a small gateway in front of it for bearer tokens and mutual TLS (what Debian's Orthanc 1.10 cannot do)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tests.ports import free_port

ARCHIVE_NEVER_SEES = ("corrupt", "not_dicom")  # push_folder skips the truncated file and the text file
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
HAVE_ORTHANC = shutil.which("Orthanc") is not None and PLUGIN.exists()


def boxes(datalist: dict) -> list:
    """Every mined box with its image, in a stable order: what two sources must agree on."""
    return sorted((it["sop_instance_uid"], it["box"]) for items in datalist.values() for it in items)


def stored_exclusions(exclusions: dict) -> dict:
    """The folder source's exclusion counts less the files an archive never stores."""
    return {k: v for k, v in exclusions.items() if k not in ARCHIVE_NEVER_SEES}


def mine_folder(pacs_export: Path, tiny_demo: Path, out: Path) -> dict:
    """The reference: the same export mined from its folder (boxes, reasons and converted slices)."""
    from bundle.mining.pipeline import Miner
    from bundle.pacs.folder import FolderSource

    return Miner(str(out), source=FolderSource(pacs_export / "dicom"), split_file=str(tiny_demo / "truth.json"), progress=False).run()


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            break
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"Orthanc did not start: {log.read_text()[-2000:]}")


@contextmanager
def run_orthanc(work: Path, **options) -> Iterator[str]:
    """Orthanc with the DICOMweb plugin on a free loopback port; `options` override its configuration. Yields its URL."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = {
        "Name": "mining-test",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "SeriesMetadata": "Full", "StudiesMetadata": "Full"},
        **options,
    }
    (work / "orthanc.json").write_text(json.dumps(cfg))
    log_path = work / "orthanc.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_port(cfg["HttpPort"], proc, log_path)
            if cfg.get("DicomServerEnabled"):
                _wait_port(cfg["DicomPort"], proc, log_path)
            yield f"{'https' if cfg.get('SslEnabled') else 'http'}://127.0.0.1:{cfg['HttpPort']}"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def make_certs(out: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA (openssl)."""
    out.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"), ("client", "extendedKeyUsage=clientAuth")):
        (out / f"{name}.ext").write_text(ext + "\nbasicConstraints=CA:FALSE\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.pem")  # fmt: skip
    return {k: out / f"{k}.pem" for k in ("ca", "server", "client")} | {k + "_key": out / f"{k}.key" for k in ("server", "client")}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":  # dicomweb-client streams large STOW bodies
        body = b""
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            body += handler.rfile.read(size)
            handler.rfile.readline()
        handler.rfile.readline()
        return body
    return handler.rfile.read(int(handler.headers.get("Content-Length", 0)))


@contextmanager
def gateway(
    upstream: str, token: str | None = None, upstream_auth: tuple[str, str] | None = None, certs: dict | None = None
) -> Iterator[str]:
    """A loopback reverse proxy as hospitals put in front of an archive; forwards GET and POST to `upstream`.

    `token`: answers 401 unless `Authorization: Bearer <token>`. `certs`: HTTPS that demands a client certificate
    signed by the test CA (mutual TLS). Why: Debian's Orthanc 1.10 has no bearer-token authentication (the
    authorization plugin is not packaged), and its HTTPS server crashes (segfault) on the first TLS connection.
    """

    class Handler(BaseHTTPRequestHandler):
        def _forward(self, method: str) -> None:
            body = _read_body(self) if method == "POST" else None
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                out, status, ctype = b'{"error": "invalid token"}', 401, "application/json"
            else:
                skip = ("host", "authorization", "transfer-encoding", "content-length", "connection")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                r = requests.request(method, upstream + self.path, headers=headers, data=body, auth=upstream_auth, timeout=60)
                out, status, ctype = r.content, r.status_code, r.headers.get("Content-Type", "application/octet-stream")
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="test"')
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._forward("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._forward("POST")

        def log_message(self, *args) -> None:  # keep pytest's output clean
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):  # TLS per connection, the handshake in the handler's thread
            sock, addr = self.socket.accept()
            return (ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False) if ctx else sock), addr

        def handle_error(self, request, client_address) -> None:  # refused handshakes are the point of some tests
            pass

    ctx = None
    if certs:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs["server"], certs["server_key"])
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs["ca"])
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if ctx else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
