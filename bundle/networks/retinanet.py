"""RetinaNet pieces sized for the task, built only from MONAI's own blocks.

Why: MONAI's ``resnet_fpn_feature_extractor`` fixes the FPN at 256 channels, which makes the
RetinaNet heads (4 convolutions of FPN width each) too slow for a 2-core CPU. Here the FPN width
is a config key; everything else is MONAI's ResNet and BackboneWithFPN.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
from monai.networks.nets.resnet import ResNet


def resnet_fpn(
    spatial_dims: int = 2,
    n_input_channels: int = 1,
    layers: Sequence[int] = (1, 1, 1, 1),
    block_inplanes: Sequence[int] = (32, 64, 128, 256),
    returned_layers: Sequence[int] = (1, 2),
    fpn_channels: int = 64,
    conv1_t_stride: int | Sequence[int] = 2,
) -> BackboneWithFPN:
    """ResNet backbone plus FPN; feature maps: one per returned layer plus a max-pooled extra level."""
    backbone = ResNet(
        block="basic",
        layers=list(layers),
        block_inplanes=list(block_inplanes),
        spatial_dims=spatial_dims,
        n_input_channels=n_input_channels,
        conv1_t_stride=conv1_t_stride,
        conv1_t_size=7,
    )
    return_layers = {f"layer{k}": str(v) for v, k in enumerate(returned_layers)}
    in_channels = [int(block_inplanes[k - 1]) for k in returned_layers]
    return BackboneWithFPN(backbone, return_layers, in_channels, fpn_channels, spatial_dims=spatial_dims)
