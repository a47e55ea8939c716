"""MONAI Label's properties for a detection bundle, in the form the model zoo's properties check reads.

The zoo's ``ci/verify_bundle.py`` checks the inference config against ``<zoo>/<app>/**/bundle_properties.py``
(``InferProperties`` and ``MetaProperties``) for each app in metadata.json's ``supported_apps``. The zoo
holds no such file for MONAI Label, so this is one: MONAI's own inference and meta properties plus the
config ids that MONAI Label 0.8.5's ``BundleInferTask`` reads for a detection bundle
(``monailabel/tasks/infer/bundle.py``, ``BundleConstants``). tests/serving/test_zoo.py uses it; to run the zoo's
own script with it, copy it to ``<zoo>/monai-label/bundle_properties.py`` (docs/deployment.md).
"""

from __future__ import annotations

from monai.bundle.properties import InferProperties as _MONAI_INFER
from monai.bundle.properties import MetaProperties
from monai.utils import BundleProperty, BundlePropertyConfig


def _required(desc: str, config_id: str) -> dict:
    return {BundleProperty.DESC: desc, BundleProperty.REQUIRED: True, BundlePropertyConfig.ID: config_id}


InferProperties = {
    **_MONAI_INFER,
    "preprocessing": _required("MONAI Label applies it to the volume before the detector (key_preprocessing).", "preprocessing"),
    "postprocessing": _required("MONAI Label applies it to the detector's result (key_postprocessing).", "postprocessing"),
    "detector": _required("MONAI Label serves a bundle as detection through this id (key_detector).", "detector"),
    "detector_ops": _required("MONAI Label runs these on the detector before inferring (key_detector_ops).", "detector_ops"),
}

__all__ = ["InferProperties", "MetaProperties"]
