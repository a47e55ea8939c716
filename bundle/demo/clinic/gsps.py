"""The clinic's Grayscale Softcopy Presentation States: POLYLINE rulers (or a POINT marker) in PIXEL or DISPLAY units.

Why both units: DISPLAY coordinates are fractions of a (zoomed) displayed area, and a miner that
ignores the Displayed Area Selection gets every such ruler wrong; the export must contain both.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from bundle.demo.clinic.config import MANUFACTURER, READERS, uid
from bundle.demo.clinic.patient import PatientExport
from bundle.io import dicom_write as dw

EQUIPMENT = dw.Equipment(MANUFACTURER, model_name="PACS-SIM", software_versions="0.1", device_serial_number="SIM-0001")


def _display_area(img: Dataset, units: str) -> tuple[int, int, int, int]:
    """Top-left and bottom-right corner (1-based pixels): zoomed in for DISPLAY units, the whole image otherwise."""
    cols, rows = img.Columns, img.Rows
    return (11, 6, cols - 5, rows - 10) if units == "DISPLAY" else (1, 1, cols, rows)


def _graphic_objects(w: PatientExport, rec: dict, units: str, area: tuple, graphic: str | None) -> list[hd.pr.GraphicObject]:
    """One graphic object per line of the mark (a RECIST pair is two), its points in ``units``."""
    pts = np.asarray(rec["points"], dtype=np.float64)
    if units == "DISPLAY":
        tl = np.array([area[0] - 1, area[1] - 1], dtype=np.float64)
        size = np.array([area[2] - area[0] + 1, area[3] - area[1] + 1], dtype=np.float64)
        pts = (pts - tl) / size
    gtype = graphic or "POLYLINE"
    segments = [pts[k : k + 2] for k in range(0, len(pts), 2)] if rec["kind"] in ("ruler", "recist") else [pts]
    return [
        hd.pr.GraphicObject(
            graphic_type=gtype,
            graphic_data=seg[:1] if gtype == "POINT" else seg,
            units=units,
            tracking_id=f"lesion-{rec['lesion']}",
            tracking_uid=uid(w.study.pid, "track", rec["lesion"]),
        )
        for seg in segments
    ]


def _displayed_area_items(refs: list[Dataset], areas: dict[str, tuple]) -> list[Dataset]:
    """One Displayed Area Selection item per image: DISPLAY coordinates are fractions of this area."""
    items = []
    for img in refs:
        a = areas[img.SOPInstanceUID]
        item = Dataset()
        ref = Dataset()
        ref.ReferencedSOPClassUID = img.SOPClassUID
        ref.ReferencedSOPInstanceUID = img.SOPInstanceUID
        item.ReferencedImageSequence = [ref]
        item.DisplayedAreaTopLeftHandCorner = [a[0], a[1]]
        item.DisplayedAreaBottomRightHandCorner = [a[2], a[3]]
        item.PresentationSizeMode = "SCALE TO FIT"
        item.PresentationPixelSpacing = [float(v) for v in img.PixelSpacing] if "PixelSpacing" in img else None
        if item.PresentationPixelSpacing is None:
            del item.PresentationPixelSpacing
            item.PresentationPixelAspectRatio = [1, 1]
        items.append(item)
    return items


def write_gsps(
    w: PatientExport,
    marks: list[dict],
    reader: str,
    time: str,
    units: str = "PIXEL",
    graphic: str | None = None,
    ref_override: Dataset | None = None,
    date: str | None = None,
) -> Path:
    """One GSPS holding the marks (grouped per referenced image), PIXEL or DISPLAY units; fills in each mark's object fields.

    ref_override: the image to reference instead of the marked one (an image deleted from the PACS).
    date: the creation date (default the study date; a second reader reads later).
    """
    w.pr_count += 1
    n = w.pr_count
    sop_uid = uid(w.study.pid, "pr", n)
    layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=1, description="reader measurements")
    by_image: dict[tuple, list[dict]] = {}
    for rec in marks:
        by_image.setdefault((rec["series"], rec["slice"]), []).append(rec)
    refs, annotations, areas = [], [], {}
    for (series, z), recs in by_image.items():
        img = ref_override if ref_override is not None else w.images[(series, z)]
        refs.append(img)
        area = areas[img.SOPInstanceUID] = _display_area(img, units)
        objs = []
        for rec in recs:
            objs += _graphic_objects(w, rec, units, area, graphic)
            rec["sop_instance_uid"] = sop_uid
            rec["referenced_sop_instance_uid"] = img.SOPInstanceUID
            rec["units"] = units
            rec["operator"] = reader
        annotations.append(hd.pr.GraphicAnnotation(referenced_images=[img], graphic_layer=layer, graphic_objects=objs))
    ds = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=refs,
        series_instance_uid=uid(w.study.pid, "pr-series", reader),
        series_number=100 + READERS.index(reader),
        sop_instance_uid=sop_uid,
        instance_number=n,
        **EQUIPMENT.highdicom_kwargs(),
        content_label="MEASUREMENTS",
        content_description="lesion measurements",
        graphic_annotations=annotations,
        graphic_layers=[layer],
        content_creator_name=reader,
    )
    if units == "DISPLAY":
        ds.DisplayedAreaSelectionSequence = _displayed_area_items(refs, areas)
    dw.copy_body_part(ds, refs[0])  # HEAD: unpaired, so Laterality stays absent
    dw.set_creation_times(ds, date or w.study.date, time)
    return w.save(ds, w.out / w.study.pid / "PR" / f"PR{n:03d}.dcm", "gsps", sop_instance_uid=sop_uid)
