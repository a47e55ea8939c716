"""Run a 2D slice detector over a 3D volume and link its boxes on adjacent slices into 3D boxes.

Why: the model is trained on axial slices (as radiologists measure), but MONAI Label, 3D Slicer
and DICOM SR want one box per lesion in the volume. ``SliceToVolumeDetector`` has the call
signature of MONAI's ``RetinaNetDetector`` (list or batch of volumes in, list of
``{box, label, label_scores}`` out, ``.network`` settable), so MONAI Label's detection path and
this bundle's evaluator drive it exactly like a native 3D detector: a later 3D model swaps the
``detector`` id and nothing else changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.data.box_utils import non_max_suppression
from monai.transforms import ScaleIntensityRangePercentiles

from bundle.inference.box_selection import batched_postprocess
from bundle.inference.box_selection import non_max_suppression as fast_non_max_suppression
from bundle.inference.slice_forward import detect, in_workers, supported, threads_per_worker
from bundle.inference.tracks import Track, check_extent, overlap, track_box
from bundle.inference.tta import check_flips, predict_views
from bundle.transforms.grid import context_step, spacing_of_affine
from bundle.transforms.slices import check_context_slices

logger = logging.getLogger(__name__)


def link_slices(
    per_slice: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    link_iou: float = 0.5,
    link_metric: str = "iomin",
    max_gap: int = 0,
    min_slices: int = 1,
    nms_thresh: float = 0.2,
    max_boxes: int = 50,
    fast_nms: bool = True,
    extent: str = "union",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Link per-slice 2D boxes into 3D boxes.

    ``per_slice[z]`` = (boxes (n, 4) xyxy, labels (n,), scores (n,)) for slice ``z``. A box joins the
    track (same label) whose last box lies at most ``max_gap`` slices back and overlaps it by
    ``link_metric`` (``iomin`` or ``iou``) >= ``link_iou`` (greedy by IoU, one box per track and slice); otherwise it starts a track.
    A track becomes a box from its first slice to its last (+1, max exclusive), in-plane as
    ``extent`` says (:func:`bundle.inference.tracks.track_box`), with the best 2D score (one confident slice is enough to flag a lesion). Tracks
    shorter than ``min_slices`` are dropped and counted; overlapping 3D boxes go through MONAI's NMS
    (``fast_nms``: the same picks from one IoU table, :func:`bundle.inference.box_selection.non_max_suppression`).
    Returns boxes (m, 6) xyzxyz, labels, scores and counts.
    """
    check_extent(extent)
    tracks: list[Track] = []
    for z, (boxes, labels, scores) in enumerate(per_slice):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels).reshape(-1).astype(int)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        taken_box: set[int] = set()
        active = [t for t in tracks if z - t.slices[-1] <= max_gap + 1]
        if active and len(boxes):
            iou = overlap(boxes, np.stack([t.boxes[-1] for t in active]), link_metric)
            for t_idx, t in enumerate(active):
                iou[labels != t.label, t_idx] = 0.0
            taken_track: set[int] = set()
            for flat in np.argsort(-iou, axis=None):
                b, t_idx = np.unravel_index(flat, iou.shape)
                if iou[b, t_idx] < link_iou:
                    break
                if b in taken_box or t_idx in taken_track:
                    continue
                t = active[t_idx]
                t.slices.append(z)
                t.boxes.append(boxes[b])
                t.scores.append(float(scores[b]))
                taken_box.add(int(b))
                taken_track.add(int(t_idx))
        for b in range(len(boxes)):
            if b not in taken_box:
                tracks.append(Track(int(labels[b]), [z], [boxes[b]], [float(scores[b])]))
    kept = [t for t in tracks if len(t.slices) >= min_slices]
    counts = {"slice_boxes": int(sum(len(t.slices) for t in tracks)), "tracks": len(tracks), "dropped_short": len(tracks) - len(kept)}
    if not kept:
        counts["after_nms"] = 0
        return np.zeros((0, 6), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32), counts
    out = np.asarray([track_box(t, extent) for t in kept], dtype=np.float32)
    lab = np.asarray([t.label for t in kept], dtype=np.int64)
    sc = np.asarray([max(t.scores) for t in kept], dtype=np.float32)
    keep_all: list[int] = []
    for c in np.unique(lab):
        idx = np.nonzero(lab == c)[0]
        nms = fast_non_max_suppression if fast_nms else non_max_suppression
        k = np.asarray(nms(out[idx], sc[idx], nms_thresh=nms_thresh, max_proposals=max_boxes))
        keep_all.extend(idx[k].tolist())
    keep = np.asarray(sorted(keep_all, key=lambda i: -sc[i])[:max_boxes], dtype=np.int64)
    counts["after_nms"] = len(keep)
    return out[keep], lab[keep], sc[keep], counts


class SliceToVolumeDetector:
    """A 3D detector made of a 2D detector: every slice along ``slice_axis``, then :func:`link_slices`.

    Not an ``nn.Module`` on purpose: MONAI Label assigns ``detector.network = <loaded network>``,
    and a Module would register that as a child instead of handing it to the 2D detector.
    """

    def __init__(
        self,
        detector,
        slice_axis: int = 2,
        slice_batch: int = 8,
        link_iou: float = 0.5,
        link_metric: str = "iomin",
        max_gap: int = 0,
        min_slices: int = 1,
        nms_thresh: float = 0.2,
        max_boxes: int = 50,
        use_inferer: bool | None = None,
        context_slices: int = 1,
        amp: bool | None = None,
        channels_last: bool | None = None,
        stack: bool = True,
        batched_select: bool = True,
        lazy_regression: bool = True,
        cpu_workers: int | None = None,
        context_mm: float | None = None,
        max_gap_mm: float | None = None,
        min_extent_mm: float | None = None,
        tta_flips: Sequence[Sequence[int]] | None = None,
        extent: str = "union",
    ) -> None:
        """``context_slices`` k (odd): each slice goes in with its k//2 neighbours each side as k channels
        (z-k//2 ... z+k//2, edges repeated), as the 2.5D model was trained. ``amp`` / ``channels_last``:
        None means on where they pay (AMP on CUDA; channels-last on CUDA and CPU). ``stack=False`` is
        the previous path (a list of slices, contiguous layout, MONAI's per-image box selection), kept for the
        benchmark's side-by-side. ``batched_select``: the stacked path selects boxes for the whole batch
        at once (:func:`bundle.inference.box_selection.postprocess_batch`, MONAI's decisions); False keeps
        MONAI's per-image ``postprocess_detections``. ``lazy_regression``: the stacked path runs the box
        regression head only on slices with a candidate (:mod:`bundle.inference.slice_forward`). ``cpu_workers``:
        the stacked path on the CPU splits the slices between this many threads (None: 2 where torch has
        2 or more intra-op threads), :func:`bundle.inference.slice_forward.in_workers`. Millimetres, from the
        volume's own slice spacing (its affine), so one setting serves every protocol: ``context_mm`` the 2.5D
        stack's farthest neighbour (as trained, ``grid.json``), ``max_gap_mm`` / ``min_extent_mm`` replace
        ``max_gap`` / ``min_slices`` where given. ``tta_flips``: extra views, each the slice axes it flips, fused per
        slice before linking (:mod:`bundle.inference.tta`). ``extent``: a track's in-plane size
        (:func:`bundle.inference.tracks.track_box`)."""
        context_slices = check_context_slices(context_slices)
        self.detector = detector
        # None: do what the caller asks; False: whole slices (faster when a slice fits the network)
        self.use_inferer = use_inferer
        self.slice_axis = slice_axis
        self.slice_batch = max(1, int(slice_batch))
        self.context_slices = int(context_slices)
        self.amp = amp
        self.channels_last = channels_last
        self.stack = stack
        self.batched_select = batched_select
        self.lazy_regression = lazy_regression
        self.cpu_workers = cpu_workers
        self.context_mm, self.max_gap_mm, self.min_extent_mm = context_mm, max_gap_mm, min_extent_mm
        self.tta_flips = check_flips(tta_flips)
        self.link_kwargs = dict(
            link_iou=link_iou,
            link_metric=link_metric,
            max_gap=max_gap,
            min_slices=min_slices,
            nms_thresh=nms_thresh,
            max_boxes=max_boxes,
            extent=check_extent(extent),
        )
        self.last_counts: list[dict] = []

    # --- what MONAI Label and the engines use from a detector ---
    @property
    def network(self):
        return self.detector.network

    @network.setter
    def network(self, value) -> None:
        self.detector.network = value

    def __getattr__(self, name: str):
        # target keys, score key, set_* configuration methods: those of the 2D detector
        if name == "detector":
            raise AttributeError(name)
        return getattr(self.detector, name)

    def eval(self):
        self.detector.eval()
        return self

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("SliceToVolumeDetector is for inference; train the 2D detector with configs/train.yaml")
        return self.eval()

    @torch.no_grad()
    def __call__(self, images, targets=None, use_inferer: bool = False) -> list[dict]:
        if targets is not None and self.detector.training:
            raise RuntimeError("SliceToVolumeDetector is for inference; train the 2D detector with configs/train.yaml")
        if self.use_inferer is not None:
            use_inferer = self.use_inferer
        vols = list(images) if not torch.is_tensor(images) else list(images.unbind(0))
        self.last_counts = []
        return [self._one(v, use_inferer) for v in vols]

    def slice_mm(self, vol: torch.Tensor) -> float:
        """The volume's spacing along the slice axis (mm; 0 when it carries no affine)."""
        affine = getattr(vol, "affine", None)
        return float(spacing_of_affine(affine)[self.slice_axis]) if affine is not None else 0.0

    def slice_stack(self, vol: torch.Tensor) -> torch.Tensor:
        """(C, X, Y, Z) volume -> (n_slices, k*C, a, b): every slice with its context as channels, in one gather."""
        step = context_step(self.context_mm, self.slice_mm(vol), self.context_slices)
        v = vol.as_subclass(torch.Tensor).movedim(self.slice_axis + 1, 0)  # (n, C, a, b)
        n, half = v.shape[0], self.context_slices // 2
        if half == 0:
            return v
        offsets = torch.arange(-half, half + 1, device=v.device) * step
        idx = (torch.arange(n, device=v.device)[:, None] + offsets[None, :]).clamp_(0, n - 1)
        return v[idx].flatten(1, 2)  # (n, k, C, a, b) -> (n, k*C, a, b), channel order z-half ... z+half

    def _workers(self, dev: torch.device, use_inferer: bool) -> int:
        """Threads the stacked path splits the slices between (``cpu_workers``; CPU only)."""
        if not self.stack or use_inferer or dev.type != "cpu":
            return 1
        return self.cpu_workers or (2 if torch.get_num_threads() >= 2 else 1)

    def _run_slices(self, slices: torch.Tensor, use_inferer: bool, workers: int = 1) -> list[dict]:
        """Chunks of ``slice_batch`` slices through the 2D detector as (B, C, H, W) batches."""
        det, dev, n = self.detector, slices.device, slices.shape[0]
        if not self.stack:  # the previous path: lists of contiguous slices
            return [
                p
                for s in range(0, n, self.slice_batch)
                for p in det(list(slices[s : s + self.slice_batch].unbind(0)), use_inferer=use_inferer)
            ]
        amp = self.amp if self.amp is not None else dev.type == "cuda"
        cl = self.channels_last if self.channels_last is not None else dev.type in ("cuda", "cpu")
        lazy = self.lazy_regression and not use_inferer and supported(det)
        bounds = np.linspace(0, n, min(workers, n) + 1).round().astype(int).tolist()

        def part(lo_hi: tuple[int, int]) -> list[dict]:  # no_grad and autocast are per thread
            out: list[dict] = []
            with torch.no_grad(), torch.autocast(dev.type, enabled=amp and dev.type == "cuda"):
                for start in range(lo_hi[0], lo_hi[1], self.slice_batch):
                    chunk = slices[start : min(start + self.slice_batch, lo_hi[1])]
                    if cl:
                        chunk = chunk.contiguous(memory_format=torch.channels_last)
                    out.extend(detect(det, chunk) if lazy else det(chunk, use_inferer=use_inferer))
            return out

        with batched_postprocess(det, self.batched_select):
            return [p for ps in in_workers(part, list(zip(bounds[:-1], bounds[1:])), workers) for p in ps]

    def _as_numpy(self, preds: list[dict]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per-slice (boxes, labels, scores) arrays for :func:`link_slices`; ``batched_select``: one copy for all slices."""
        keys = (self.detector.target_box_key, self.detector.target_label_key, self.detector.pred_score_key)

        def arrays(boxes, labels, scores):
            return boxes.detach().float().cpu().numpy(), labels.detach().cpu().numpy(), scores.detach().float().cpu().numpy()

        if not self.batched_select or not preds:
            return [arrays(*(p[k] for k in keys)) for p in preds]
        cuts = np.cumsum([len(p[keys[0]]) for p in preds])[:-1]
        return list(zip(*(np.split(a, cuts) for a in arrays(*(torch.cat([p[k] for p in preds]) for k in keys)))))

    def _link_kwargs(self, vol: torch.Tensor) -> dict:
        """Linking's settings for this volume: the millimetre ones in its slices."""
        kw, mm = dict(self.link_kwargs), self.slice_mm(vol)
        if mm > 0 and self.max_gap_mm is not None:
            kw["max_gap"] = int(np.floor(self.max_gap_mm / mm + 1e-6))
        if mm > 0 and self.min_extent_mm is not None:
            kw["min_slices"] = max(1, int(np.ceil(self.min_extent_mm / mm - 1e-6)))
        return kw

    def _floor(self) -> tuple[float, bool]:
        """The box selector's lowest score and whether scores are logits: a TTA view without a box counts at it."""
        sel = self.detector.box_selector if self.tta_flips else None
        return (float(sel.score_thresh), not sel.apply_sigmoid) if sel is not None else (0.0, True)

    def _one(self, vol: torch.Tensor, use_inferer: bool) -> dict:
        if vol.ndim != 4:
            raise ValueError(f"SliceToVolumeDetector expects (C, X, Y, Z) volumes, got shape {tuple(vol.shape)}")
        workers = self._workers(vol.device, use_inferer)
        with threads_per_worker(workers):  # the linking step's small ops too

            def run(stack: torch.Tensor) -> list:
                return self._as_numpy(self._run_slices(stack, use_inferer, workers))

            per_slice = predict_views(run, self.slice_stack(vol), self.tta_flips, *self._floor())
            boxes, labels, scores, counts = link_slices(per_slice, **self._link_kwargs(vol), fast_nms=self.batched_select)
        if self.slice_axis != 2:  # 2D boxes are in the two remaining axes; put z where it belongs
            boxes = _reinsert_axis(boxes, self.slice_axis)
        self.last_counts.append(counts)
        logger.info("slice-wise detection: %s", counts)
        det, dev = self.detector, vol.device
        return {
            det.target_box_key: torch.as_tensor(boxes, device=dev),
            det.target_label_key: torch.as_tensor(labels, device=dev),
            det.pred_score_key: torch.as_tensor(scores, device=dev),
        }


def _reinsert_axis(boxes: np.ndarray, axis: int) -> np.ndarray:
    """Boxes built as (a, b, s) with s the slice axis -> array axis order."""
    order = [d for d in range(3) if d != axis]
    out = np.zeros_like(boxes)
    for src, dst in enumerate(order + [axis]):
        out[:, dst] = boxes[:, src]
        out[:, dst + 3] = boxes[:, src + 3]
    return out


class ScaleIntensityPerSliced:
    """Percentile intensity scaling per slice, as each 2D training slice was scaled on its own.

    Why: the model saw every slice scaled by its own 0-99.5 percentiles; scaling a whole volume at
    once would give edge slices (little brain) a different contrast than the model learnt. All
    slices' percentiles come from one ``np.percentile`` call (same linear interpolation as MONAI's
    ``ScaleIntensityRangePercentiles``); ``vectorised=False`` is MONAI's transform slice by slice.
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        slice_axis: int = 2,
        lower: float = 0.0,
        upper: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        vectorised: bool = True,
    ) -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.slice_axis = slice_axis
        self.lower, self.upper, self.b_min, self.b_max, self.clip = lower, upper, b_min, b_max, clip
        self.vectorised = vectorised
        self.scaler = ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=b_min, b_max=b_max, clip=clip)

    def _scale_all(self, img):
        """Every slice (all its channels together, as MONAI's transform sees it) scaled by its own percentiles at once."""
        axis = self.slice_axis + 1
        arr = img.detach().cpu().numpy() if torch.is_tensor(img) else np.asarray(img)
        moved = np.moveaxis(arr, axis, 0)  # (n, C, a, b)
        flat = moved.reshape(moved.shape[0], -1).astype(np.float32, copy=False)
        lo, hi = np.percentile(flat, [self.lower, self.upper], axis=1).astype(np.float32)
        width = hi - lo
        # MONAI's ScaleIntensityRange: a flat slice is only shifted (x - a_min + b_min)
        gain = np.where(width == 0, 1.0, (self.b_max - self.b_min) / np.where(width == 0, 1.0, width)).astype(np.float32)
        out = (flat - lo[:, None]) * gain[:, None] + np.float32(self.b_min)
        if self.clip:
            np.clip(out, self.b_min, self.b_max, out=out)
        out = np.moveaxis(out.reshape(moved.shape), 0, axis)
        if torch.is_tensor(img):
            res = img.clone()
            res.copy_(torch.from_numpy(np.ascontiguousarray(out)).to(res.dtype))
            return res
        return out.astype(arr.dtype, copy=False)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for k in self.keys:
            img = d[k]
            if self.vectorised:
                d[k] = self._scale_all(img)
                continue
            axis = self.slice_axis + 1
            out = img.clone() if torch.is_tensor(img) else np.array(img, copy=True)
            for z in range(img.shape[axis]):
                idx = (slice(None),) * axis + (z,)
                out[idx] = self.scaler(img[idx])
            d[k] = out
        return d
