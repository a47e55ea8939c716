"""The real-file corpus: scanner and archive files that installed packages ship, run as a new user runs them.

Why: the simulator writes only what this project knows about. These files were written by real scanners
and archives (Siemens, Philips, GE, the DICOM sample collections), re-encoded by tool authors, and kept
broken on purpose where a package tests its error paths. `tests/io/test_real_files_corpus.py` runs the whole
corpus through de-identification (the `configs/deidentify.yaml` entry), mining of the originals and of the
de-identified copies, and checks the outcome; `python tests/io/real_files.py` writes docs/real_files.md from
the same run, so every figure on that page comes from this code.

Provenance and licences (every file is used as the package installs it, untouched; `.gz` files are
gunzipped, as an archive would hold them):

| package (PyPI) | folder | licence | what it holds |
| --- | --- | --- | --- |
| nibabel | nibabel/nicom/tests/data, nibabel/tests/data (`*.dcm*`) | MIT | Siemens DWI/DTI mosaics with CSA headers, Siemens MR slices, a Philips Enhanced MR (MPRAGE, 176 frames) |
| pydicom | pydicom/data/test_files (all files, the DICOMDIR tree included), pydicom/data/charset_files | MIT; its README: files from public sample collections, names edited out | MR, CT, RT, SR, US, SC, ECG in every transfer syntax, big endian, headerless files, truncated files, a DICOMDIR export with real MR series |
| pydicom-data | data_store/data | MIT | pydicom's larger files: the GDCM/dicom samples (MR, CT, RG, US), Enhanced MR and CT, a Siemens MR with a lesion overlay |
| pynetdicom | pynetdicom/tests/dicom_files | MIT | CT, MR, RT image, SC files a DIMSE peer stores, one with a damaged meta |

highdicom ships no DICOM files in its wheel.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAGE = ROOT / "docs" / "real_files.md"
KEY = "corpus-key-0123456789abcdef"  # a test key: the corpus holds no real patient
# Values of PatientName / PatientID that are placeholders, not identities (also the de-identifier's own dummies).
PLACEHOLDERS = {"anonymized", "anonymous", "anon"}
# Files their package truncated or cut on purpose (pydicom's README, their names): corrupt is the right answer.
DAMAGED_ON_PURPOSE = ("truncated", "too_short")


def _site_packages() -> Path:
    import pydicom

    return Path(pydicom.__file__).resolve().parent.parent


@dataclass(frozen=True)
class Shelf:
    """One folder of an installed package, copied into the corpus under `name`."""

    name: str
    folder: str
    pattern: str = "**/*"


SHELVES = (
    Shelf("nibabel/nicom", "nibabel/nicom/tests/data", "*.dcm*"),
    Shelf("nibabel/tests", "nibabel/tests/data", "*.dcm*"),
    Shelf("pydicom", "pydicom/data/test_files"),
    Shelf("pydicom/charset_files", "pydicom/data/charset_files"),
    Shelf("pydicom-data", "data_store/data"),
    Shelf("pynetdicom", "pynetdicom/tests/dicom_files"),
)


def gather(dest: Path) -> list[str]:
    """Copy the corpus into dest; returns the relative paths (POSIX), sorted. A shelf that is not installed is skipped."""
    site = _site_packages()
    out = []
    for shelf in SHELVES:
        src = site / shelf.folder
        if not src.is_dir():
            continue
        for p in sorted(src.glob(shelf.pattern)):
            if not p.is_file() or p.name.startswith(".") or "__pycache__" in p.parts or p.suffix == ".py":
                continue
            rel = Path(shelf.name) / p.relative_to(src)
            target = dest / (rel.with_suffix("") if p.suffix == ".gz" else rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            if p.suffix == ".gz":
                target.write_bytes(gzip.decompress(p.read_bytes()))
            else:
                shutil.copyfile(p, target)
            out.append(target.relative_to(dest).as_posix())
    return sorted(out)


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Everything written to file descriptors 1 and 2 meanwhile (forked workers and C decoders included), and
    every log record as configs/logging.conf would print it (INFO and up, root handler, tracebacks included)."""
    text: list[str] = []
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            root.removeHandler(handler)
            root.setLevel(level)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))
            text.append(log.getvalue())


@dataclass
class CorpusRun:
    """What one run produced: per file outcomes, the reports, the captured output."""

    files: list[str]
    deid: dict[str, str] = field(default_factory=dict)  # input -> written / excluded:<reason> / failed:<reason>
    deid_output: dict[str, str] = field(default_factory=dict)  # input -> output path (relative) for written files
    mined: dict[str, str] = field(default_factory=dict)  # input -> mining outcome on the original
    mined_deid: dict[str, str] = field(default_factory=dict)  # input -> mining outcome on its de-identified copy
    inferred: dict[str, str] = field(default_factory=dict)  # input of an MR file -> volume inference on its de-identified series
    deid_report: dict[str, Any] = field(default_factory=dict)
    mining_report: dict[str, Any] = field(default_factory=dict)
    mining_deid_report: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    phi_hits: list[dict[str, Any]] = field(default_factory=list)
    phi_values: int = 0
    corrupt_but_readable: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _mine(source_dir: Path, out: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Mine a folder; outcome per location: the issue's reason, else what was read (and its measurements' fate)."""
    from bundle.mining.pipeline import Miner
    from bundle.pacs.folder import FolderSource

    class Recording(FolderSource):
        results: list = []

        def collect(self, inspect, workers=1, progress=False):  # type: ignore[no-untyped-def]
            self.results = super().collect(inspect, workers, progress)
            return self.results

    source = Recording(source_dir)
    report = Miner(str(out), source=source, workers=2, progress=False)
    report = report.run()["report"]
    outcome: dict[str, str] = {}
    for r in source.results:
        outcome[r.location] = f"read: {r.object}" if r.object else ""
    for issue in report["file_issues"]:
        outcome[issue["source"]] = issue["reason"]
    ms: dict[str, list[str]] = {}
    for m in report["excluded_measurements"]:
        ms.setdefault(m["source"], []).append(m["status"])
    for loc, statuses in ms.items():
        if outcome.get(loc, "").startswith("read"):
            counts = {s: statuses.count(s) for s in sorted(set(statuses))}
            outcome[loc] += " (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
    return report, outcome


def _readable(path: Path) -> bool:
    """The independent oracle: pydicom reads the object whole, its SOP UIDs and pixels included."""
    import pydicom

    if any(word in path.name for word in DAMAGED_ON_PURPOSE):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # pydicom warns (and returns a partial data set) at an early end of file
        try:
            ds = pydicom.dcmread(path, force=True)
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                return False
            if "PixelData" in ds:
                ds.pixel_array  # noqa: B018 - decoding is the check
        except Exception:  # noqa: BLE001 - any failure: not readable whole
            return False
    return True


def _identities(corpus: Path, files: list[str]) -> set[str]:
    """Every original PatientName and PatientID (whole values, >= 5 characters, placeholders left out)."""
    import pydicom

    values: set[str] = set()
    for rel in files:
        try:
            ds = pydicom.dcmread(corpus / rel, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - not DICOM: no identity
            continue
        for kw in ("PatientName", "PatientID"):
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 5 and v.lower() not in PLACEHOLDERS:
                values.add(v)
    return values


def _mr_series(deid_dir: Path) -> list[Path]:
    """The de-identified MR series folders (<pseudonym>/<study>/<series>/)."""
    import pydicom

    out = []
    for folder in sorted({p.parent for p in deid_dir.rglob("*.dcm")}):
        first = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        if str(first.get("Modality", "")) == "MR":
            out.append(folder)
    return out


def _infer(series: list[Path], work: Path) -> dict[str, str]:
    """Volume inference (configs/inference_volume.yaml, DICOM in, an untrained seeded model) on every MR series folder.

    Each folder is screened as the config screens its inputs (`CheckVolumed`): a refusal is that series' outcome;
    the volumes that pass run in one workflow, and their outcome is the number of boxes (any score)."""
    from monai.bundle import ConfigWorkflow

    from bundle.demo.run import save_untrained
    from bundle.inference.dicom_input import CheckVolumed
    from bundle.transforms.checks import BadImageError

    outcome: dict[str, str] = {}
    good = []
    for folder in series:
        try:
            CheckVolumed("image", 3)({"image": str(folder)})
        except BadImageError as exc:
            why = re.sub(r"^series [0-9.]+: ", "", str(exc).removeprefix(f"{folder}: "))
            outcome[str(folder)] = "refused: " + why.split(";")[0].split(" (")[0]
        except Exception as exc:  # noqa: BLE001 - a bug: counted as an internal failure
            outcome[str(folder)] = f"internal_error: {type(exc).__name__}"
        else:
            good.append(folder)
    if good:
        save_untrained(work / "model" / "models" / "model.pt", seed=0)
        wf = ConfigWorkflow(
            config_file=str(ROOT / "configs" / "inference_volume.yaml"),
            workflow_type="infer",
            bundle_root=str(work / "model"),
            output_path=str(work / "predictions.json"),
            datalist=[{"image": str(f)} for f in good],
            score_threshold=-1e9,
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        import json

        for pred in json.loads((work / "predictions.json").read_text())["predictions"]:
            outcome[str(Path(pred["image"]))] = f"boxes: {len(pred['box'])}"
        for skip in json.loads((work / "predictions.json").read_text()).get("skipped", []):
            outcome[str(Path(skip["image"]))] = "refused: " + skip["reason"]
    return outcome


def run_corpus(work: Path) -> CorpusRun:
    """Gather, de-identify (the config's entry), mine the originals and the de-identified copies, run volume inference on
    the de-identified MR series; check PHI and 'corrupt'."""
    from bundle.deid.deidentify import run as deidentify
    from bundle.deid.phi_check import find_phi

    corpus, deid_dir, secure = work / "corpus", work / "deid", work / "secure"
    secure.mkdir(parents=True, exist_ok=True)
    (secure / "key").write_text(KEY)
    res = CorpusRun(files=gather(corpus))
    with captured_output() as out:
        res.deid_report = deidentify(str(corpus), str(deid_dir), str(secure / "key"), linkage_file=str(secure / "linkage.csv"))
        res.mining_report, mined = _mine(corpus, work / "mined")
        res.mining_deid_report, mined_deid = _mine(deid_dir, work / "mined_deid")
        inferred = _infer(_mr_series(deid_dir), work / "inference")
    res.output = "".join(out)
    with open(secure / "linkage_files.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            status = row["output_or_status"]
            if status.startswith("error:"):
                res.deid[row["input"]] = "failed: " + status.split(":")[1]
            elif status.startswith("excluded:"):
                parts = status.split(":", 2)
                res.deid[row["input"]] = "excluded: " + parts[1] + (f" (kept {parts[2][5:]})" if len(parts) > 2 else "")
            else:
                res.deid[row["input"]] = "written"
                res.deid_output[row["input"]] = status
    res.mined = {rel: mined.get(rel, "") for rel in res.files}
    res.mined_deid = {rel: mined_deid.get(res.deid_output[rel], "") for rel in res.deid_output}
    for rel, out_rel in res.deid_output.items():
        series = str(deid_dir / Path(out_rel).parent)
        if series in inferred:
            res.inferred[rel] = inferred[series]
    res.extra["series_inferred"] = inferred
    values = _identities(corpus, res.files)
    res.phi_values = len(values)
    res.phi_hits = [h for d in (deid_dir, work / "mined_deid", work / "inference") if d.is_dir() for h in find_phi(d, values)]
    called_corrupt = {rel for rel, o in res.deid.items() if o == "failed: corrupt"} | {
        rel for rel, o in res.mined.items() if o == "corrupt"
    }
    res.corrupt_but_readable = sorted(rel for rel in called_corrupt if _readable(corpus / rel))
    res.extra["called_corrupt"] = sorted(called_corrupt)
    return res


INTERNAL = ("failed: deidentify_failed", "internal_error", "conversion_failed")


def checks(res: CorpusRun) -> list[tuple[str, int, int]]:
    """(check, figure, required figure): the page's first table and the test's assertions."""
    unaccounted = [f for f in res.files if not res.deid.get(f) or not res.mined.get(f)]
    unaccounted += [f for f in res.deid_output if not res.mined_deid.get(f)]
    unaccounted += [s for s, o in res.extra["series_inferred"].items() if not o]
    internal = [f for f, o in {**res.deid, **res.mined}.items() if o.startswith(INTERNAL)]
    internal += [f for f, o in res.mined_deid.items() if o.startswith(INTERNAL)]
    internal += [f for f, o in res.extra["series_inferred"].items() if o.startswith(INTERNAL)]
    return [
        ("files in the corpus", len(res.files), len(res.files)),
        ("files (or MR series) without an outcome in a step", len(unaccounted), 0),
        ("tracebacks printed", res.output.count("Traceback"), 0),
        ("internal failures (deidentify_failed, internal_error, conversion_failed)", len(internal), 0),
        (f"output files holding an original patient name or ID ({res.phi_values} values)", len({h["file"] for h in res.phi_hits}), 0),
        (f"readable files called corrupt (of {len(res.extra['called_corrupt'])} called corrupt)", len(res.corrupt_but_readable), 0),
    ]


def page(res: CorpusRun) -> str:
    """docs/real_files.md: the checks, the counts by outcome, then every file's outcome."""
    from collections import Counter

    def reason(o: str) -> str:
        return o.split(" (")[0]

    lines = [
        "# Real files from real scanners and archives",
        "",
        "Generated by `python tests/io/real_files.py` from the run `tests/io/test_real_files_corpus.py` makes in CI (a test fails when",
        "this copy differs). The corpus is every DICOM test file that nibabel, pydicom, pydicom-data and pynetdicom ship",
        "(provenance and licences in `tests/io/real_files.py`): real Siemens, Philips and GE MR, CT, CR, US, NM, RT, SR, SEG, ECG,",
        "Enhanced MR and CT, palette and YBR colour, big endian, headerless and deliberately damaged files, and a DICOMDIR export.",
        "Each file goes through de-identification (`configs/deidentify.yaml`'s entry), mining of the original",
        "(`configs/mine.yaml`'s `Miner`) and mining of its de-identified copy; each de-identified MR series folder then goes",
        "to volume inference (`configs/inference_volume.yaml` with the folder as its DICOM input, an untrained seeded model:",
        "plumbing, not accuracy). Reasons are those of [de-identification](deidentification.md), `bundle/io/records.py`",
        "`REASONS` and [bad inputs](bad_inputs.md).",
        "",
        "| check | figure | required |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {got} | {want} |" for name, got, want in checks(res)]
    lines += ["", "| step | outcome | files |", "| --- | --- | ---: |"]
    for step, outcomes in (
        ("de-identification", res.deid),
        ("mining (original)", res.mined),
        ("mining (de-identified copy)", res.mined_deid),
    ):
        for k, n in sorted(Counter(reason(o) for o in outcomes.values()).items()):
            lines.append(f"| {step} | {k} | {n} |")
    lines += ["", "| volume inference on the de-identified MR series | series |", "| --- | ---: |"]
    for k, n in sorted(Counter(o if o.startswith("refused") else o.split(":")[0] for o in res.extra["series_inferred"].values()).items()):
        lines.append(f"| {k} | {n} |")
    for step, outcomes in ():
        for k, n in sorted(Counter(reason(o) for o in outcomes.values()).items()):
            lines.append(f"| {step} | {k} | {n} |")
    lines += [
        "",
        "## Every file",
        "",
        "| file | de-identification | mining (original) | mining (de-identified copy) | volume inference (its series) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rel in res.files:
        row = [res.deid.get(rel, ""), res.mined.get(rel, ""), res.mined_deid.get(rel, "-"), res.inferred.get(rel, "-")]
        lines.append(f"| {rel} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        result = run_corpus(Path(tmp))
    PAGE.write_text(page(result))
    for name, got, want in checks(result):
        print(f"{name}: {got} (required {want})")
    print(f"wrote {PAGE}")
