"""PACS-export simulator: the demo patients as real DICOM plus the annotations a clinic leaves behind.

Why: mining must be tested against complete truth. A real PACS never says which lesions a reader
skipped; this export does. Each demo patient becomes an MR study (axial T1 post-contrast series, an
axial FLAIR series) whose pixels are exactly the demo volume (`pixel_array.T == vol[:, :, z]`), and
readers' marks as GSPS (POLYLINE rulers, RECIST pairs, PIXEL or DISPLAY units) and DICOM SR TID 1500
(SCOORD POLYLINE/ELLIPSE, SCOORD3D). Only the 1-3 largest lesions per study are measured (configurable),
with reader noise; incidents a real export contains are spread round-robin over the patients so even a
4-patient export has each: measurements on another series, too small / too large rulers, duplicates by a
second reader, a truncated file, a non-DICOM file, an SR group pointing at a segmentation, a reference to
a deleted image, an image without PixelSpacing, a POINT marker and a Key Object Selection document.

`record.json` keeps, per patient, which demo lesions were measured, on which slice, how, and the status
a correct miner must give each mark (kept with its box, or the exclusion reason). Names and IDs are
obviously synthetic (no PHI).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bundle.io.records import Measurement
from bundle.mining.rules.boxes import BoxRules, iou, measurement_box

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
T1_DESCRIPTION = "AX T1 POST GAD"
FLAIR_DESCRIPTION = "AX T2 FLAIR"
INCIDENTS = (
    "series_description",
    "too_large",
    "too_small",
    "duplicate",
    "corrupt",
    "not_dicom",
    "segmentation_reference",
    "reference_not_found",
    "missing_pixel_spacing",
    "unsupported_graphic",
    "unsupported_object",
)
READERS = ("Reader^Alpha", "Reader^Bravo", "Reader^Charlie")


@dataclass
class ExportConfig:
    """Knobs of the simulated clinic."""

    max_measured: int = 3  # a reader measures 1..max_measured of the largest lesions per study
    p_recist_pair: float = 0.6  # long + short axis; otherwise a single ruler
    p_sr: float = 0.5  # measurement stored as SR TID 1500 instead of GSPS
    p_display_units: float = 0.3  # GSPS in DISPLAY units (with a zoomed displayed area)
    p_scoord3d: float = 0.3  # SR ruler as SCOORD3D
    noise_fraction: float = 0.02  # reader noise: endpoint jitter, sd as a fraction of the line length
    first_study_date: str = "20210104"


def _uid(*parts) -> str:
    """Deterministic UID: the same export twice gives byte-identical files."""
    return generate_uid(entropy_srcs=["brain-mri-tumor-detection-demo-pacs", *map(str, parts)])


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "BMTD_SIM_0_1"
    return meta


def _fix_times(ds: Dataset, date: str, time: str) -> None:
    """highdicom stamps 'now'; a deterministic export overwrites every creation date/time."""
    for key in ("ContentDate", "PresentationCreationDate", "InstanceCreationDate", "SeriesDate"):
        if key in ds:
            setattr(ds, key, date)
    for key in ("ContentTime", "PresentationCreationTime", "InstanceCreationTime", "SeriesTime"):
        if key in ds:
            setattr(ds, key, time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time


class _Study:
    """One patient's study: builds image datasets that share patient/study/frame-of-reference attributes."""

    def __init__(self, patient: dict, vol: np.ndarray, affine: np.ndarray, date: str, number: int):
        self.pid = patient["patient_id"]
        self.vol = vol
        self.spacing = [float(s) for s in patient["spacing"]]
        self.affine = affine
        self.date = date
        self.number = number
        self.study_uid = _uid(self.pid, "study")
        self.for_uid = _uid(self.pid, "for")

    def patient_module(self, ds: Dataset) -> None:
        ds.PatientName = f"SYNTHETIC^DEMO{self.number:03d}"
        ds.PatientID = self.pid
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate = self.date
        ds.StudyTime = "090000"
        ds.StudyID = f"S{self.number:04d}"
        ds.AccessionNumber = f"SIM{self.number:06d}"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MRI BRAIN W WO CONTRAST (SYNTHETIC)"

    def position(self, z: int) -> list[float]:
        """LPS position of voxel (0, 0, z): the NIfTI affine is RAS, so x and y flip sign."""
        ras = self.affine @ np.array([0.0, 0.0, float(z), 1.0])
        return [round(-float(ras[0]), 4), round(-float(ras[1]), 4), round(float(ras[2]), 4)]

    def world(self, points_px: np.ndarray, z: int) -> np.ndarray:
        """PIXEL coordinates (col, row) on slice z -> LPS mm (for SCOORD3D)."""
        ipp = np.asarray(self.position(z))
        row_dir, col_dir = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])
        p = np.asarray(points_px, dtype=np.float64)
        return ipp + (p[:, :1] - 0.5) * self.spacing[0] * row_dir + (p[:, 1:2] - 0.5) * self.spacing[1] * col_dir

    def image(self, series: str, z: int, pixels: np.ndarray, *, spacing: bool = True, sop_uid: str | None = None) -> Dataset:
        """One slice as MR Image Storage (or Secondary Capture without PixelSpacing)."""
        desc, number = {
            "t1c": (T1_DESCRIPTION, 3),
            "flair": (FLAIR_DESCRIPTION, 2),
            "key": ("KEY IMAGES " + T1_DESCRIPTION, 90),
            "deleted": (T1_DESCRIPTION, 3),
        }[series]
        sop_class = MR_STORAGE if spacing else SC_STORAGE
        sop_uid = sop_uid or _uid(self.pid, series, z)
        ds = Dataset()
        ds.file_meta = _file_meta(sop_class, sop_uid)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        self.patient_module(ds)
        ds.Modality = "MR"
        ds.BodyPartExamined = "HEAD"  # unpaired: Laterality must then be absent
        ds.SeriesInstanceUID = _uid(self.pid, "series", "t1c" if series == "deleted" else series)
        ds.SeriesNumber = number
        ds.SeriesDescription = desc
        ds.SeriesDate = self.date
        ds.SeriesTime = "091000"
        ds.Manufacturer = "SYNTHETIC"
        ds.InstanceNumber = z + 1
        ds.ContentDate = self.date
        ds.ContentTime = "091000"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[0])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(pixels.T.astype("<i2")).tobytes()
        ds.BurnedInAnnotation = "NO"
        if spacing:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.PatientPosition = "HFS"
            ds.FrameOfReferenceUID = self.for_uid
            ds.PositionReferenceIndicator = ""
            ds.PixelSpacing = [self.spacing[1], self.spacing[0]]  # row spacing (y), column spacing (x)
            ds.SliceThickness = self.spacing[2]
            ds.SpacingBetweenSlices = self.spacing[2]
            ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
            ds.ImagePositionPatient = self.position(z)
            ds.SliceLocation = self.position(z)[2]
            ds.ScanningSequence = ["GR", "IR"]
            ds.SequenceVariant = ["SP", "MP"]
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.RepetitionTime = 1900 if series != "flair" else 9000
            ds.EchoTime = 2.5 if series != "flair" else 90
            ds.InversionTime = 900 if series != "flair" else 2500
            ds.EchoTrainLength = 1
            ds.MagneticFieldStrength = 3
            ds.ImagedNucleus = "1H"
            if series != "flair":
                ds.ContrastBolusAgent = "GADOLINIUM (SYNTHETIC)"
        else:
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.ConversionType = "WSD"
            ds.PatientOrientation = ["L", "P"]
        return ds


def _save(ds: Dataset, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _lesion_lines(mask2d: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A careful reader's long axis and longest perpendicular short axis, edge to edge, in PIXEL coords."""
    pts = np.argwhere(mask2d == index).astype(np.float64) + 0.5  # pixel centres, (col, row)
    d = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    a, b = pts[i], pts[j]
    if np.allclose(a, b):
        b = a + [1.0, 0.0]
    u = (b - a) / np.linalg.norm(b - a)
    v = np.array([-u[1], u[0]])
    long = np.array([a - 0.5 * u, b + 0.5 * u])  # to the pixel edges
    pu, pv = (pts - a) @ u, (pts - a) @ v
    best, short = -1.0, None
    for t in np.unique(np.round(pu)):
        sel = np.abs(pu - t) <= 0.5
        lo, hi = pv[sel].min() - 0.5, pv[sel].max() + 0.5
        if hi - lo > best:
            best, short = hi - lo, np.array([a + t * u + lo * v, a + t * u + hi * v])
    return long, short


def _noisy(rng: np.random.Generator, line: np.ndarray, spacing, frac: float) -> np.ndarray:
    length_px = float(np.linalg.norm(line[1] - line[0]))
    jitter = np.clip(rng.normal(0.0, frac * length_px, size=(2, 2)), -2 * frac * length_px, 2 * frac * length_px)
    return np.round(line + jitter, 2)


class _Writer:
    """Writes one patient's export and the record of what each mark must become."""

    def __init__(self, out: Path, study: _Study, mask: np.ndarray, cfg: ExportConfig, rng: np.random.Generator, rules: BoxRules):
        self.out, self.study, self.mask, self.cfg, self.rng, self.rules = out, study, mask, cfg, rng, rules
        self.images: dict[tuple[str, int], Dataset] = {}
        self.marks: list[dict] = []
        self.files: list[dict] = []
        self.pr_count = 0
        self.sr_count = 0

    # -- images ---------------------------------------------------------------------------------
    def write_series(self, series: str) -> None:
        vol = self.study.vol
        if series == "flair":  # a different contrast of the same anatomy: what matters is the header
            vol = (np.max(vol) - vol).astype(np.int16)
        for z in range(vol.shape[2]):
            ds = self.study.image(series, z, vol[:, :, z])
            self.images[(series, z)] = ds
            _save(ds, self.out / self.study.pid / f"{series}" / f"IM{z + 1:04d}")  # no extension, as PACS exports often are

    # -- marks ----------------------------------------------------------------------------------
    def _expect(self, kind: str, points_px: np.ndarray, series: str, z: int) -> dict:
        """The status and box a correct miner must give this mark under the default rules."""
        cols, rows = self.study.vol.shape[0], self.study.vol.shape[1]
        m = Measurement(kind=kind, points=np.asarray(points_px).tolist(), reader="sim", source="", spacing=self.study.spacing[:2])
        box, length = measurement_box(m, self.rules, shape=(cols, rows))
        status = "kept"
        if series == "flair":
            status = "series_description"
        elif length < self.rules.min_long_mm:
            status = "too_small"
        elif length > self.rules.max_long_mm:
            status = "too_large"
        return {"status": status, "box": box, "long_mm": round(length, 3)}

    def mark(self, lesion: int | None, series: str, z: int, kind: str, lines: list[np.ndarray], fmt: str, note: str, **extra) -> dict:
        pts = np.vstack(lines)
        rec = {
            "patient": self.study.pid,
            "lesion": lesion,
            "slice": int(z),
            "series": series,
            "kind": kind,
            "format": fmt,
            "points": np.round(pts, 3).tolist(),
            "note": note,
            **self._expect(kind, pts, series, z),
            **extra,
        }
        if lesion is not None:
            where = np.argwhere(self.mask[:, :, z] == lesion)
            rec["true_box"] = [int(v) for v in where.min(0)] + [int(v) + 1 for v in where.max(0)]
        self.marks.append(rec)
        return rec

    # -- annotation objects ---------------------------------------------------------------------
    def gsps(
        self,
        marks: list[dict],
        reader: str,
        time: str,
        units: str = "PIXEL",
        graphic: str | None = None,
        ref_override: Dataset | None = None,
    ) -> Path:
        """One GSPS holding the marks (grouped per referenced image), PIXEL or DISPLAY units."""
        self.pr_count += 1
        n = self.pr_count
        sop_uid = _uid(self.study.pid, "pr", n)
        layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=1, description="reader measurements")
        by_image: dict[tuple, list[dict]] = {}
        for rec in marks:
            by_image.setdefault((rec["series"], rec["slice"]), []).append(rec)
        refs, annotations = [], []
        display_areas = {}
        for (series, z), recs in by_image.items():
            img = ref_override if ref_override is not None else self.images[(series, z)]
            refs.append(img)
            cols, rows = img.Columns, img.Rows
            area = (11, 6, cols - 5, rows - 10) if units == "DISPLAY" else (1, 1, cols, rows)
            display_areas[img.SOPInstanceUID] = area
            objs = []
            for rec in recs:
                pts = np.asarray(rec["points"], dtype=np.float64)
                if units == "DISPLAY":
                    tl = np.array([area[0] - 1, area[1] - 1], dtype=np.float64)
                    size = np.array([area[2] - area[0] + 1, area[3] - area[1] + 1], dtype=np.float64)
                    pts = (pts - tl) / size
                gtype = graphic or "POLYLINE"
                segments = [pts[k : k + 2] for k in range(0, len(pts), 2)] if rec["kind"] in ("ruler", "recist") else [pts]
                for seg in segments:
                    data = seg[:1] if gtype == "POINT" else seg
                    objs.append(
                        hd.pr.GraphicObject(
                            graphic_type=gtype,
                            graphic_data=data,
                            units=units,
                            tracking_id=f"lesion-{rec['lesion']}",
                            tracking_uid=_uid(self.study.pid, "track", rec["lesion"]),
                        )
                    )
                rec["sop_instance_uid"] = sop_uid
                rec["referenced_sop_instance_uid"] = img.SOPInstanceUID
                rec["units"] = units
                rec["operator"] = reader
            annotations.append(hd.pr.GraphicAnnotation(referenced_images=[img], graphic_layer=layer, graphic_objects=objs))
        ds = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=refs,
            series_instance_uid=_uid(self.study.pid, "pr-series", reader),
            series_number=100 + READERS.index(reader),
            sop_instance_uid=sop_uid,
            instance_number=n,
            manufacturer="SYNTHETIC",
            manufacturer_model_name="PACS-SIM",
            software_versions="0.1",
            device_serial_number="SIM-0001",
            content_label="MEASUREMENTS",
            content_description="lesion measurements",
            graphic_annotations=annotations,
            graphic_layers=[layer],
            content_creator_name=reader,
        )
        if units == "DISPLAY":
            # one displayed-area item per image, zoomed: DISPLAY coordinates are fractions of this area
            items = []
            for img in refs:
                a = display_areas[img.SOPInstanceUID]
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
            ds.DisplayedAreaSelectionSequence = items
        ds.BodyPartExamined = "HEAD"
        _fix_times(ds, self.study.date, time)
        path = self.out / self.study.pid / "PR" / f"PR{n:03d}.dcm"
        _save(ds, path)
        self.files.append({"file": str(path.relative_to(self.out)), "kind": "gsps", "sop_instance_uid": sop_uid})
        return path

    def sr(self, marks: list[dict], reader: str, time: str, seg_group: bool = False) -> Path:
        """One SR TID 1500 measurement report: a planar ROI group per mark (SCOORD or SCOORD3D)."""
        self.sr_count += 1
        n = self.sr_count
        sop_uid = _uid(self.study.pid, "sr", n)
        groups, evidence = [], []
        for k, rec in enumerate(marks):
            img = self.images[(rec["series"], rec["slice"])]
            evidence.append(img)
            pts = np.asarray(rec["points"], dtype=np.float64)
            tracking = hd.sr.TrackingIdentifier(uid=_uid(self.study.pid, "sr-track", n, k), identifier=f"lesion {rec['lesion']}")
            if rec.get("scoord3d"):
                region = hd.sr.ImageRegion3D(
                    graphic_type="POLYLINE", graphic_data=self.study.world(pts, rec["slice"]), frame_of_reference_uid=self.study.for_uid
                )
            else:
                gtype = "ELLIPSE" if rec["kind"] == "recist" else "POLYLINE"
                region = hd.sr.ImageRegion(
                    graphic_type=gtype, graphic_data=pts, source_image=hd.sr.SourceImageForRegion.from_source_image(img)
                )
            if rec["kind"] == "recist":  # SR stores the pair as an ELLIPSE: the miner reads an ellipse
                rec["kind_in_object"] = "ellipse"
                rec.update(self._expect("ellipse", pts, rec["series"], rec["slice"]))
            sp = self.study.spacing
            lengths = [float(np.linalg.norm((pts[i + 1] - pts[i]) * sp[:2])) for i in range(0, len(pts), 2)]
            meas = [hd.sr.Measurement(name=codes.SCT.LongAxis, value=round(lengths[0], 2), unit=codes.UCUM.Millimeter)]
            if len(lengths) > 1:
                meas.append(hd.sr.Measurement(name=codes.SCT.ShortAxis, value=round(lengths[1], 2), unit=codes.UCUM.Millimeter))
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking, referenced_region=region, finding_type=codes.SCT.Lesion, measurements=meas
                )
            )
            rec["sop_instance_uid"] = sop_uid
            rec["referenced_sop_instance_uid"] = img.SOPInstanceUID
            rec["operator"] = reader
            rec["units"] = "SCOORD3D" if rec.get("scoord3d") else "PIXEL"
        if seg_group:
            img = self.images[("t1c", self.study.vol.shape[2] // 2)]
            evidence.append(img)
            seg = hd.sr.ReferencedSegment(
                sop_class_uid=SEG_STORAGE,
                sop_instance_uid=_uid(self.study.pid, "seg"),
                segment_number=1,
                source_images=[hd.sr.SourceImageForSegmentation.from_source_image(img)],
            )
            # the SEG itself lives in another archive; the SR's evidence still names it, as real reports do
            seg_ref = Dataset()
            study_attrs = Dataset()
            self.study.patient_module(study_attrs)
            seg_ref.update(study_attrs)
            seg_ref.SOPClassUID = SEG_STORAGE
            seg_ref.SOPInstanceUID = _uid(self.study.pid, "seg")
            seg_ref.SeriesInstanceUID = _uid(self.study.pid, "seg-series")
            seg_ref.Modality = "SEG"
            evidence.append(seg_ref)
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(self.study.pid, "seg-track"), identifier="segmented lesion"),
                    referenced_segment=seg,
                    finding_type=codes.SCT.Lesion,
                    measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=1234.0, unit=codes.UCUM.CubicMillimeter)],
                )
            )
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person, observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=reader)
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_person_context=observer),
            procedure_reported=hd.sr.CodedConcept("24590-2", "LN", "MR Brain"),
            imaging_measurements=groups,
        )
        unique = {img.SOPInstanceUID: img for img in evidence}
        ds = hd.sr.Comprehensive3DSR(
            evidence=list(unique.values()),
            content=report,
            series_instance_uid=_uid(self.study.pid, "sr-series", reader),
            series_number=200 + READERS.index(reader),
            sop_instance_uid=sop_uid,
            instance_number=n,
            manufacturer="SYNTHETIC",
            is_complete=True,
        )
        _fix_times(ds, self.study.date, time)
        path = self.out / self.study.pid / "SR" / f"SR{n:03d}.dcm"
        _save(ds, path)
        self.files.append({"file": str(path.relative_to(self.out)), "kind": "sr", "sop_instance_uid": sop_uid})
        return path


def _largest_slice(mask: np.ndarray, index: int) -> int:
    areas = (mask == index).sum(axis=(0, 1))
    return int(np.argmax(areas))


def export_patient(
    out: Path, demo_dir: Path, patient: dict, number: int, incidents: list[str], cfg: ExportConfig, rules: BoxRules, seed: int
) -> dict:
    """Write one patient's study and annotation objects; return its record."""
    rng = np.random.default_rng([seed, 7919, number])
    img = nib.load(demo_dir / patient["image"])
    vol = np.asarray(img.dataobj).astype(np.int16)
    mask = np.asarray(nib.load(demo_dir / patient["mask"]).dataobj)
    date = (
        _dt.date.fromisoformat(f"{cfg.first_study_date[:4]}-{cfg.first_study_date[4:6]}-{cfg.first_study_date[6:]}")
        + _dt.timedelta(days=7 * number)
    ).strftime("%Y%m%d")
    study = _Study(patient, vol, img.affine, date, number)
    w = _Writer(out, study, mask, cfg, rng, rules)
    w.write_series("t1c")
    w.write_series("flair")
    sp = study.spacing

    lesions = sorted(patient["lesions"], key=lambda les: (-les["diameter_mm"], les["index"]))
    n_measure = min(len(lesions), int(rng.integers(1, cfg.max_measured + 1)))
    measured = []
    for les in lesions[:n_measure]:
        z = _largest_slice(mask, les["index"])
        long, short = _lesion_lines(mask[:, :, z], les["index"])
        pair = rng.random() < cfg.p_recist_pair
        fmt = "sr" if rng.random() < cfg.p_sr else "gsps"
        lines = [_noisy(rng, long, sp, cfg.noise_fraction)] + ([_noisy(rng, short, sp, cfg.noise_fraction)] if pair else [])
        scoord3d = fmt == "sr" and not pair and rng.random() < cfg.p_scoord3d
        rec = w.mark(les["index"], "t1c", z, "recist" if pair else "ruler", lines, fmt, "primary measurement", scoord3d=scoord3d)
        rec["clean_lines"] = [np.round(long, 3).tolist()] + ([np.round(short, 3).tolist()] if pair else [])
        measured.append(rec)
    units = "DISPLAY" if rng.random() < cfg.p_display_units else "PIXEL"
    gsps_marks = [r for r in measured if r["format"] == "gsps"]
    sr_marks = [r for r in measured if r["format"] == "sr"]
    if gsps_marks:
        w.gsps(gsps_marks, READERS[0], "101500", units=units)
    if sr_marks:
        w.sr(sr_marks, READERS[0], "101600")
    first = measured[0] if measured else None  # a normal study has images only
    z_mid = vol.shape[2] // 2
    cols, rows = vol.shape[0], vol.shape[1]
    for inc in incidents if first else []:
        if inc == "series_description":  # the same lesion measured again on the FLAIR series
            long = np.asarray(first["clean_lines"][0])
            rec = w.mark(
                first["lesion"], "flair", first["slice"], "ruler", [_noisy(rng, long, sp, cfg.noise_fraction)], "gsps", "measured on FLAIR"
            )
            w.gsps([rec], READERS[1], "102000")
        elif inc == "too_large":  # a ruler across the whole head (a midline/width measurement)
            line = np.array([[0.15 * cols, 0.5 * rows], [0.85 * cols, 0.5 * rows]])
            rec = w.mark(None, "t1c", z_mid, "ruler", [line], "gsps", "head width ruler")
            w.gsps([rec], READERS[1], "102100")
        elif inc == "too_small":  # a 6 mm ruler on a tiny enhancing focus
            c = np.array([cols / 2, rows / 2])
            line = np.array([c, c + [6.0 / sp[0], 0.0]])
            rec = w.mark(None, "t1c", z_mid, "ruler", [line], "sr", "small focus")
            w.sr([rec], READERS[1], "102200")
        elif inc == "duplicate":  # a second reader measures a kept lesion again, later
            for prim in measured:
                if prim["status"] != "kept":
                    continue
                line = _noisy(rng, np.asarray(prim["clean_lines"][0]), sp, cfg.noise_fraction)
                cand = w._expect("ruler", line, "t1c", prim["slice"])
                if cand["status"] == "kept" and iou(cand["box"], prim["box"]) >= rules.duplicate_iou:
                    rec = w.mark(
                        prim["lesion"],
                        "t1c",
                        prim["slice"],
                        "ruler",
                        [line],
                        "gsps",
                        "second reader",
                        duplicate_of=prim["sop_instance_uid"],
                    )
                    rec["status"] = "duplicate"
                    w.gsps([rec], READERS[2], "140000")
                    break
        elif inc == "corrupt":  # a GSPS cut short in transfer
            rec = w.mark(first["lesion"], "t1c", first["slice"], "ruler", [np.asarray(first["points"][:2])], "gsps", "truncated file")
            path = w.gsps([rec], READERS[1], "102300")
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * 0.6)])
            rec["status"] = "corrupt"
            w.files[-1]["expected"] = "corrupt"
        elif inc == "not_dicom":
            path = out / study.pid / "NOTES"
            path.write_text("Synthetic export. Exported by PACS-SIM; this file is not DICOM.\n")
            w.files.append({"file": str(path.relative_to(out)), "kind": "text", "expected": "not_dicom"})
        elif inc == "segmentation_reference":
            w.sr([], READERS[1], "102400", seg_group=True)
            w.marks.append(
                {
                    "patient": study.pid,
                    "lesion": None,
                    "status": "segmentation_reference",
                    "format": "sr",
                    "note": "group references a SEG",
                    "sop_instance_uid": w.files[-1]["sop_instance_uid"],
                }
            )
        elif inc == "reference_not_found":  # the measured image was deleted from the PACS before export
            ghost = study.image("deleted", first["slice"], vol[:, :, first["slice"]], sop_uid=_uid(study.pid, "deleted"))
            rec = w.mark(first["lesion"], "t1c", first["slice"], "ruler", [np.asarray(first["points"][:2])], "gsps", "image deleted")
            rec["status"] = "reference_not_found"
            w.gsps([rec], READERS[1], "102500", ref_override=ghost)
        elif inc == "missing_pixel_spacing":  # a key-image secondary capture has no PixelSpacing
            z = first["slice"]
            key = study.image("key", z, vol[:, :, z], spacing=False)
            w.images[("key", z)] = key
            _save(key, out / study.pid / "key" / f"IM{z + 1:04d}")
            rec = w.mark(first["lesion"], "key", z, "ruler", [np.asarray(first["points"][:2])], "gsps", "key image")
            rec["status"] = "missing_pixel_spacing"
            w.gsps([rec], READERS[1], "102600")
        elif inc == "unsupported_graphic":  # an arrow tip marker: a POINT, no size
            rec = w.mark(first["lesion"], "t1c", first["slice"], "ruler", [np.asarray(first["points"][:2])], "gsps", "point marker")
            rec["status"] = "unsupported_graphic"
            w.gsps([rec], READERS[1], "102700", graphic="POINT")
        elif inc == "unsupported_object":
            img0 = w.images[("t1c", first["slice"])]
            content = hd.ko.KeyObjectSelection(document_title=codes.DCM.OfInterest, referenced_objects=[img0], observer_person_context=None)
            ko = hd.ko.KeyObjectSelectionDocument(
                evidence=[img0],
                content=content,
                series_instance_uid=_uid(study.pid, "ko-series"),
                series_number=300,
                sop_instance_uid=_uid(study.pid, "ko"),
                instance_number=1,
                manufacturer="SYNTHETIC",
            )
            _fix_times(ko, date, "103000")
            path = out / study.pid / "KO" / "KO001.dcm"
            _save(ko, path)
            w.files.append(
                {"file": str(path.relative_to(out)), "kind": "ko", "expected": "unsupported_object", "sop_instance_uid": ko.SOPInstanceUID}
            )
    for rec in measured:
        rec.pop("clean_lines", None)
    return {
        "patient": study.pid,
        "study_date": date,
        "study_instance_uid": study.study_uid,
        "measured_lesions": [{"lesion": r["lesion"], "slice": r["slice"], "status": r["status"]} for r in measured],
        "unmeasured_lesions": [les["index"] for les in lesions[n_measure:]],
        "incidents": incidents,
        "marks": w.marks,
        "files": w.files,
    }


def _export_job(job: tuple) -> dict:
    return export_patient(*job)


def export(
    demo_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    config: ExportConfig | None = None,
    rules: BoxRules | None = None,
    splits: tuple[str, ...] | None = None,
    workers: int = 2,
) -> dict:
    """Write the simulated PACS export of a demo set under `out_dir/dicom` and its record as `out_dir/record.json`.

    splits: export only the patients of these demo splits (None: all). The demo keeps its test
    cohort out of the PACS: like the seed study's 100 test patients, it is a separately, fully
    labelled set, and its mined boxes would be thrown away anyway.
    """
    demo, out = Path(demo_dir), Path(out_dir)
    cfg, rules = config or ExportConfig(), rules or BoxRules()
    truth = json.loads((demo / "truth.json").read_text())
    split = truth.get("split", {})
    # a patient keeps its number (study date, UIDs, random stream) whichever splits are exported
    numbered = [(i, p) for i, p in enumerate(truth["patients"]) if splits is None or split.get(p["patient_id"]) in splits]
    per_patient: dict[int, list[str]] = {i: [] for i, _ in numbered}
    # incidents go round-robin over patients with lesions: most need a measured lesion to act on
    with_lesions = [i for i, p in numbered if p["lesions"]]
    if not with_lesions:
        raise ValueError(f"{demo / 'truth.json'}: no exported patient has a lesion; nothing for a reader to measure")
    for k, inc in enumerate(INCIDENTS):
        per_patient[with_lesions[k % len(with_lesions)]].append(inc)
    jobs = [(out / "dicom", demo, p, i, per_patient[i], cfg, rules, seed) for i, p in numbered]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            records = pool.map(_export_job, jobs)  # ordered, and each patient has its own seed: same bytes as serial
    else:
        records = [_export_job(j) for j in jobs]
    marks = [m for r in records for m in r["marks"]]
    file_issues = [f for r in records for f in r["files"] if "expected" in f]
    expected: dict[str, int] = {}
    for m in marks:
        expected[m["status"]] = expected.get(m["status"], 0) + 1
    for f in file_issues:
        if f["expected"] != "corrupt":  # a corrupt file's mark is already counted above
            expected[f["expected"]] = expected.get(f["expected"], 0) + 1
    record = {
        "demo_dir": str(demo),
        "seed": seed,
        "config": cfg.__dict__,
        "rules": rules.__dict__,
        "split": split,
        "splits_exported": list(splits) if splits is not None else "all",
        "patients": records,
        "expected_counts": dict(sorted(expected.items())),
        "note": "status 'kept' marks must be mined as boxes (IoU >= 0.9 with 'box'); every other status is the exclusion reason",
    }
    (out / "record.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, help="demo folder written by bundle.demo.synth.generate")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-measured", type=int, default=3)
    a = ap.parse_args(argv)
    rec = export(a.demo, a.out, a.seed, ExportConfig(max_measured=a.max_measured))
    print(json.dumps(rec["expected_counts"]))


if __name__ == "__main__":
    main()
