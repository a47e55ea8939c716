"""What a real PACS export contains besides clean measurements, one function per incident (names in config.INCIDENTS).

Why: mining is only tested if every exclusion reason occurs. Each incident acts on a study that
already has its primary measurements (``measured``, first one first) and records the status a
correct miner must give what it writes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bundle.demo.clinic.config import READERS, uid
from bundle.demo.clinic.gsps import write_gsps
from bundle.demo.clinic.patient import PatientExport
from bundle.demo.clinic.readers import noisy
from bundle.demo.clinic.sr import write_ko, write_sr
from bundle.io import dicom_write as dw
from bundle.mining.rules.boxes import iou


def _reline(w: PatientExport, line) -> np.ndarray:
    return noisy(w.rng, np.asarray(line), w.study.spacing, w.cfg.noise_fraction)


def series_description(w: PatientExport, measured: list[dict]) -> None:
    """The same lesion measured again on the FLAIR series."""
    first = measured[0]
    rec = w.mark(first["lesion"], "flair", first["slice"], "ruler", [_reline(w, first["clean_lines"][0])], "gsps", "measured on FLAIR")
    write_gsps(w, [rec], READERS[1], "102000")


def too_large(w: PatientExport, measured: list[dict]) -> None:
    """A ruler across the whole head (a midline/width measurement)."""
    cols, rows = w.study.vol.shape[0], w.study.vol.shape[1]
    line = np.array([[0.15 * cols, 0.5 * rows], [0.85 * cols, 0.5 * rows]])
    rec = w.mark(None, "t1c", w.study.vol.shape[2] // 2, "ruler", [line], "gsps", "head width ruler")
    write_gsps(w, [rec], READERS[1], "102100")


def too_small(w: PatientExport, measured: list[dict]) -> None:
    """A 6 mm ruler on a tiny enhancing focus."""
    cols, rows = w.study.vol.shape[0], w.study.vol.shape[1]
    c = np.array([cols / 2, rows / 2])
    line = np.array([c, c + [6.0 / w.study.spacing[0], 0.0]])
    rec = w.mark(None, "t1c", w.study.vol.shape[2] // 2, "ruler", [line], "sr", "small focus")
    write_sr(w, [rec], READERS[1], "102200")


def duplicate(w: PatientExport, measured: list[dict]) -> None:
    """A second reader measures a kept lesion again, later (the first kept lesion whose re-measure overlaps enough)."""
    for prim in measured:
        if prim["status"] != "kept":
            continue
        line = _reline(w, prim["clean_lines"][0])
        cand = w.expect("ruler", line, "t1c", prim["slice"])
        if cand["status"] == "kept" and iou(cand["box"], prim["box"]) >= w.rules.duplicate_iou:
            rec = w.mark(
                prim["lesion"], "t1c", prim["slice"], "ruler", [line], "gsps", "second reader", duplicate_of=prim["sop_instance_uid"]
            )
            rec["status"] = "duplicate"
            write_gsps(w, [rec], READERS[2], "140000", date=w.later_date())  # a later day: mining's "earliest wins" is unambiguous
            return


def corrupt(w: PatientExport, measured: list[dict]) -> None:
    """A GSPS cut short in transfer."""
    first = measured[0]
    rec = w.mark(first["lesion"], "t1c", first["slice"], "ruler", [np.asarray(first["points"][:2])], "gsps", "truncated file")
    path = write_gsps(w, [rec], READERS[1], "102300")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    rec["status"] = "corrupt"
    w.files[-1]["expected"] = "corrupt"


def not_dicom(w: PatientExport, measured: list[dict]) -> None:
    """A text file in the export folder."""
    path = w.out / w.study.pid / "NOTES"
    path.write_text("Synthetic export. Exported by PACS-SIM; this file is not DICOM.\n")
    w.files.append({"file": str(path.relative_to(w.out)), "kind": "text", "expected": "not_dicom"})


def segmentation_reference(w: PatientExport, measured: list[dict]) -> None:
    """An SR whose only group references a SEG instead of image coordinates."""
    write_sr(w, [], READERS[1], "102400", seg_group=True)
    w.marks.append(
        {
            "patient": w.study.pid,
            "lesion": None,
            "status": "segmentation_reference",
            "format": "sr",
            "note": "group references a SEG",
            "sop_instance_uid": w.files[-1]["sop_instance_uid"],
        }
    )


def reference_not_found(w: PatientExport, measured: list[dict]) -> None:
    """The measured image was deleted from the PACS before export: the GSPS references an image that is not there."""
    first = measured[0]
    z = first["slice"]
    ghost = w.study.image("deleted", z, w.study.vol[:, :, z], sop_uid=uid(w.study.pid, "deleted"))
    rec = w.mark(first["lesion"], "t1c", z, "ruler", [np.asarray(first["points"][:2])], "gsps", "image deleted")
    rec["status"] = "reference_not_found"
    write_gsps(w, [rec], READERS[1], "102500", ref_override=ghost)


def missing_pixel_spacing(w: PatientExport, measured: list[dict]) -> None:
    """A key-image secondary capture has no PixelSpacing: its ruler has no size in mm."""
    first = measured[0]
    z = first["slice"]
    key = w.study.image("key", z, w.study.vol[:, :, z], spacing=False)
    w.images[("key", z)] = key
    dw.save(key, w.out / w.study.pid / "key" / f"IM{z + 1:04d}")
    rec = w.mark(first["lesion"], "key", z, "ruler", [np.asarray(first["points"][:2])], "gsps", "key image")
    rec["status"] = "missing_pixel_spacing"
    write_gsps(w, [rec], READERS[1], "102600")


def unsupported_graphic(w: PatientExport, measured: list[dict]) -> None:
    """An arrow tip marker: a POINT, no size."""
    first = measured[0]
    rec = w.mark(first["lesion"], "t1c", first["slice"], "ruler", [np.asarray(first["points"][:2])], "gsps", "point marker")
    rec["status"] = "unsupported_graphic"
    write_gsps(w, [rec], READERS[1], "102700", graphic="POINT")


def unsupported_object(w: PatientExport, measured: list[dict]) -> None:
    """A Key Object Selection document on the first measured image."""
    write_ko(w, w.images[("t1c", measured[0]["slice"])], "103000")


SIMULATE: dict[str, Callable[[PatientExport, list[dict]], None]] = {
    "series_description": series_description,
    "too_large": too_large,
    "too_small": too_small,
    "duplicate": duplicate,
    "corrupt": corrupt,
    "not_dicom": not_dicom,
    "segmentation_reference": segmentation_reference,
    "reference_not_found": reference_not_found,
    "missing_pixel_spacing": missing_pixel_spacing,
    "unsupported_graphic": unsupported_graphic,
    "unsupported_object": unsupported_object,
}
