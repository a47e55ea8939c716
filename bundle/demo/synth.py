"""Synthetic T1 post-contrast brain MRI built on the real MNI152 anatomy.

Why: the project needs data with *complete* truth (every lesion boxed) to measure what mining
misses and what self-training recovers, and no patient data may enter the repository.
Each patient is the MNI152 template under a random smooth deformation, a bias field and Rician
noise, with enhancing lesions (ring-enhancing or solid metastases, some extra-axial dural-based
masses) and bright vessel-like distractors that are *not* lesions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bundle.datalist.split import split_patients

SIZES = {
    # name: (training, validation, test patients, in-plane spacing mm, slice thickness mm).
    # The test cohort is large on purpose: the seed study held out 100 fully labelled patients,
    # and a paired bootstrap over 16 test patients gave a 95% CI of +-0.055 on an F1 difference,
    # wider than the self-training effect the demo measures (docs/results.md).
    "tiny": (4, 1, 1, 3.0, 6.0),
    "small": (14, 5, 5, 1.5, 4.0),
    "default": (48, 16, 80, 1.5, 4.0),
    "large": (240, 80, 80, 1.0, 3.0),
}


@dataclass
class Lesion:
    """One lesion's ground truth in voxel coordinates of the written volume."""

    index: int
    kind: str  # "ring", "solid" or "extra_axial"
    center_vox: list[float]
    diameter_mm: float
    box_vox: list[int]  # [x0, y0, z0, x1, y1, z1], max exclusive, from the mask
    label: int = 0


@dataclass
class Patient:
    patient_id: str
    image: str
    mask: str
    spacing: list[float]
    shape: list[int]
    lesions: list[Lesion] = field(default_factory=list)
    distractors: int = 0
    distractor_mask: str = ""


@lru_cache(maxsize=4)
def _template(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1, brain mask, WM and GM probability, resampled once per spacing."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    src = np.abs(np.diag(t1.affine)[:3])
    zoom = src / np.asarray(spacing)
    out = []
    for img, order in ((t1, 1), (mask, 0), (wm, 1), (gm, 1)):
        arr = np.asarray(img.get_fdata(), dtype=np.float32)
        out.append(ndimage.zoom(arr, zoom, order=order))
    t1a, m, w, g = out
    t1a = t1a / np.percentile(t1a[m > 0.5], 99)
    return t1a, m > 0.5, w, g


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], grid: int, amp: float) -> np.ndarray:
    """Random coarse grid upsampled by separable cubic splines (one small matrix per axis: fast)."""
    coarse = rng.normal(0.0, amp, size=(grid,) * len(shape))
    mats = []
    for n in shape:
        eye = np.eye(grid)
        mats.append(np.stack([ndimage.zoom(eye[a], n / grid, order=3)[:n] for a in range(grid)], axis=1))
    if len(shape) == 3:
        return np.einsum("ia,jb,kc,abc->ijk", *mats, coarse, optimize=True).astype(np.float32)
    return np.einsum("ia,jb,ab->ij", *mats, coarse, optimize=True).astype(np.float32)


def _deform(rng: np.random.Generator, arrays: list[np.ndarray], spacing: np.ndarray, orders: list[int]) -> list[np.ndarray]:
    """Random smooth deformation plus a small rotation and scaling, applied identically to all arrays."""
    shape = arrays[0].shape
    ctr = (np.asarray(shape) - 1) / 2.0
    ang = np.deg2rad(rng.uniform(-6, 6))
    scale = rng.uniform(0.92, 1.08, size=3)
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    mat = rot @ np.diag(1.0 / scale)
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) - ctr[:, None]
    coords = (mat @ grid) + ctr[:, None]
    coords = coords.reshape((3,) + shape)
    for ax in range(3):
        coords[ax] += _smooth_field(rng, shape, 5, 3.0 / spacing[ax])
    return [ndimage.map_coordinates(a, coords, order=o, mode="constant", cval=0.0) for a, o in zip(arrays, orders)]


def _ellipsoid(
    shape: tuple[int, ...], center: np.ndarray, radii_mm: np.ndarray, rot: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Normalised ellipsoid radius (<1 inside) on a bounding sub-grid, for cheap lesion drawing.

    Distances are taken in millimetres before the rotation: with anisotropic voxels (thick slices)
    rotating voxel offsets would squash lesions in-plane.
    """
    r = np.ceil(float(np.max(radii_mm)) / spacing).astype(int) + 2
    lo = np.clip(np.floor(center - r).astype(int), 0, shape)
    hi = np.clip(np.ceil(center + r).astype(int) + 1, lo, shape)  # empty (not negative) outside the volume
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    g = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).astype(np.float32)
    d = ((g - center) * spacing) @ rot.T
    rho = np.sqrt(((d / radii_mm) ** 2).sum(-1))
    return rho, sl


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q


def _vessel(rng: np.random.Generator, img: np.ndarray, brain: np.ndarray, spacing: np.ndarray, level: float) -> None:
    """A thin bright tortuous tube: a contrast-filled vessel, the classic false positive."""
    pts = np.argwhere(brain)
    p = pts[rng.integers(len(pts))].astype(np.float64)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    length_mm = rng.uniform(20, 60)
    radius_mm = rng.uniform(0.8, 1.5)
    steps = int(length_mm / 0.5)
    for _ in range(steps):
        direction += rng.normal(scale=0.15, size=3)
        direction /= np.linalg.norm(direction)
        p = p + direction * 0.5 / spacing
        rho, sl = _ellipsoid(img.shape, p, np.full(3, radius_mm), np.eye(3), spacing)
        sub = img[sl]
        np.maximum(sub, level * (rho < 1.0), out=sub)


def _add_lesion(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    lesions: list[Lesion],
    interior: np.ndarray,
    surface: np.ndarray,
    wm_level: float,
    sp: np.ndarray,
    diameter_mm: tuple[float, float],
    p_extra_axial: float,
) -> None:
    """Paint one lesion (solid, ring-enhancing with edema, or extra-axial) into img and mask; append its truth."""
    shape = img.shape
    extra = rng.random() < p_extra_axial
    d = float(np.exp(rng.uniform(np.log(diameter_mm[0]), np.log(diameter_mm[1]))))
    if extra:
        d = max(d, 12.0)
    radii_mm = d / 2 * rng.uniform(0.75, 1.0, size=3)
    radii_mm[0] = d / 2
    pool = np.argwhere(surface if extra else interior)
    for _ in range(50):
        c = pool[rng.integers(len(pool))].astype(np.float64)
        rho, sl = _ellipsoid(shape, c, radii_mm, _random_rotation(rng), sp)
        if not np.any(mask[sl][rho < 1.3]):
            break
    inside = rho < 1.0
    if not inside.any():
        return
    sub = img[sl]
    idx = len(lesions) + 1
    if extra:
        kind = "extra_axial"
        sub[inside] = wm_level * rng.uniform(1.5, 1.8)
    else:
        edema = (rho >= 1.0) & (rho < 1.6)
        sub[edema & (mask[sl] == 0)] *= rng.uniform(0.7, 0.85)
        kind = "ring" if d >= 12 and rng.random() < 0.7 else "solid"
        if kind == "ring":
            wall = rng.uniform(0.55, 0.75)
            sub[inside & (rho >= wall)] = wm_level * rng.uniform(1.5, 1.9)
            sub[inside & (rho < wall)] = wm_level * rng.uniform(0.35, 0.55)
        else:
            sub[inside] = wm_level * rng.uniform(1.4, 1.8)
    msub = mask[sl]
    msub[inside] = idx
    where = np.argwhere(mask == idx)
    box = [int(v) for v in where.min(0)] + [int(v) + 1 for v in where.max(0)]
    lesions.append(Lesion(idx, kind, [float(v) for v in where.mean(0)], round(d, 2), box))


def _distractors_and_noise(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    brain: np.ndarray,
    sp: np.ndarray,
    wm_level: float,
    n_distractors: tuple[int, int],
    noise: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Enhancing vessels (never over a lesion), bias field and Rician noise; (int16 image, vessel mask, vessel count)."""
    shape = img.shape
    n_vessels = int(rng.integers(n_distractors[0], n_distractors[1] + 1))
    vessels = np.zeros(shape, dtype=np.uint8)
    for _ in range(n_vessels):
        before = img.copy()
        _vessel(rng, img, brain, sp, wm_level * rng.uniform(1.5, 1.9))
        # a vessel never paints over a lesion: lesion truth stays exact
        img[mask > 0] = before[mask > 0]
        vessels[img != before] = 1
    bias = np.exp(_smooth_field(rng, shape, 3, 0.12))
    img = img * bias
    real = img + rng.normal(0, noise, size=shape)
    imag = rng.normal(0, noise, size=shape)
    img = np.sqrt(real**2 + imag**2).astype(np.float32)
    return (img * 1000).astype(np.int16), vessels, n_vessels


def generate_patient(
    rng: np.random.Generator,
    patient_id: str,
    spacing: tuple[float, float, float],
    out_dir: Path,
    n_lesions: tuple[int, int] = (2, 12),  # brain metastases are often many: most go unmeasured
    diameter_mm: tuple[float, float] = (5.0, 40.0),
    p_extra_axial: float = 0.15,
    n_distractors: tuple[int, int] = (2, 5),
    noise: float = 0.03,
    p_normal: float = 0.15,
) -> Patient:
    """Draw one patient, write image and lesion mask as NIfTI, return its complete truth."""
    t1, brain, wm, gm = _template(tuple(spacing))
    sp = np.asarray(spacing, dtype=np.float64)
    img, brain_f, wm, gm = _deform(rng, [t1, brain.astype(np.float32), wm, gm], sp, [1, 1, 1, 1])
    brain = brain_f > 0.5
    shape = img.shape
    mask = np.zeros(shape, dtype=np.uint8)
    wm_level = float(np.median(img[wm > 0.7])) if np.any(wm > 0.7) else 1.0
    lesions: list[Lesion] = []
    interior = ndimage.binary_erosion(brain, iterations=max(1, int(round(8 / sp[0]))))
    surface = brain & ~ndimage.binary_erosion(brain, iterations=max(1, int(round(3 / sp[0]))))
    # some studies are normal: study-level specificity needs negatives
    normal = rng.random() < p_normal
    count = 0 if normal else int(rng.integers(n_lesions[0], n_lesions[1] + 1))
    for _ in range(count):
        _add_lesion(rng, img, mask, lesions, interior, surface, wm_level, sp, diameter_mm, p_extra_axial)
    img, vessels, n_vessels = _distractors_and_noise(rng, img, mask, brain, sp, wm_level, n_distractors, noise)
    affine = np.diag(list(sp) + [1.0])
    affine[:3, 3] = -np.asarray(shape) * sp / 2
    pdir = out_dir / patient_id
    pdir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img, affine), pdir / "t1c.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), pdir / "lesions.nii.gz")
    nib.save(nib.Nifti1Image(vessels, affine), pdir / "distractors.nii.gz")
    return Patient(
        patient_id,
        f"{patient_id}/t1c.nii.gz",
        f"{patient_id}/lesions.nii.gz",
        list(map(float, sp)),
        list(shape),
        lesions,
        n_vessels,
        f"{patient_id}/distractors.nii.gz",
    )


def slice_boxes(mask2d: np.ndarray, spacing: tuple[float, float], min_visible_mm: float) -> list[tuple[int, list[int]]]:
    """2D boxes of every lesion cross-section on one slice whose long side reaches min_visible_mm."""
    out = []
    for idx in np.unique(mask2d):
        if idx == 0:
            continue
        where = np.argwhere(mask2d == idx)
        lo, hi = where.min(0), where.max(0) + 1
        ext_mm = (hi - lo) * np.asarray(spacing)
        if ext_mm.max() >= min_visible_mm:
            out.append((int(idx), [int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])]))
    return out


def write_slice(vol: np.ndarray, z: int, spacing: list[float], path: Path) -> None:
    """One axial slice as a 2D NIfTI whose affine keeps the in-plane spacing (what the trainer reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    aff[2, 3] = z * spacing[2]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol[:, :, z]), aff), path)


def _generate_one(job: tuple) -> Patient:
    """One patient from its own seed: the result does not depend on which worker draws it."""
    seed, i, spacing, out = job
    return generate_patient(np.random.default_rng([seed, i]), f"demo-{i:03d}", spacing, out)


def generate(
    out_dir: str | Path,
    size: str = "default",
    seed: int = 0,
    n_patients: int | None = None,
    min_visible_mm: float = 5.0,
    negatives_per_patient: int = 1,
    workers: int = 2,
) -> dict:
    """Generate the demo set: volumes, masks, complete truth and the 2D detection datalist."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_val, n_test, inplane, thick = SIZES[size]
    fractions = (n_train / (n_train + n_val + n_test), n_val / (n_train + n_val + n_test), n_test / (n_train + n_val + n_test))
    count = n_patients or n_train + n_val + n_test
    spacing = (inplane, inplane, thick)
    _template(spacing)  # load once here; forked workers inherit it
    jobs = [(seed, i, spacing, out) for i in range(count)]
    if workers > 1 and count > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            patients = pool.map(_generate_one, jobs)  # ordered: same output as the serial loop
    else:
        patients = [_generate_one(j) for j in jobs]
    split = split_patients([p.patient_id for p in patients], seed, fractions)
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for p in patients:
        vol = np.asarray(nib.load(out / p.image).dataobj)
        mask = np.asarray(nib.load(out / p.mask).dataobj)
        key_slices = sorted({int(round(les.center_vox[2])) for les in p.lesions})
        rng = np.random.default_rng([seed, 10_000 + int(p.patient_id.split("-")[1])])
        empty = [z for z in range(vol.shape[2]) if not mask[:, :, z].any() and vol[:, :, z].mean() > 0.2 * vol.mean()]
        n_neg = negatives_per_patient if p.lesions else max(3, negatives_per_patient)
        if empty and n_neg:
            key_slices += [int(z) for z in rng.choice(empty, size=min(n_neg, len(empty)), replace=False)]
        for z in sorted(set(key_slices)):
            rel = f"slices/{p.patient_id}_z{z:03d}.nii.gz"
            write_slice(vol, z, p.spacing, out / rel)
            boxes = slice_boxes(mask[:, :, z], (p.spacing[0], p.spacing[1]), min_visible_mm)
            kinds = {les.index: les.kind for les in p.lesions}
            datalist[split[p.patient_id]].append(
                {
                    "image": rel,
                    "box": [b for _, b in boxes],
                    "label": [0 for _ in boxes],
                    "lesion": [i for i, _ in boxes],
                    "kind": [kinds[i] for i, _ in boxes],
                    "patient": p.patient_id,
                    "volume": p.image,
                    "slice": z,
                }
            )
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1))
    truth = {
        "seed": seed,
        "size": size,
        "box_mode": "xyzxyz voxel (array index) coordinates, max exclusive",
        "patients": [asdict(p) for p in patients],
        "split": split,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return {"datalist": str(out / "datalist.json"), "truth": str(out / "truth.json"), "counts": {k: len(v) for k, v in datalist.items()}}
