from .backbone import Backbone
from .build import BACKBONE_REGISTRY, build_backbone
from .fpn import FPN, LastLevelMaxPool, build_resnet_fpn_backbone
from .resnet import ResNet, build_resnet_backbone
from .swin import SwinTransformer, build_swin_backbone
from .timm_backbone import TimmBackbone, build_timm_backbone

__all__ = [
    "Backbone",
    "BACKBONE_REGISTRY",
    "build_backbone",
    "ResNet",
    "build_resnet_backbone",
    "FPN",
    "LastLevelMaxPool",
    "build_resnet_fpn_backbone",
    "TimmBackbone",
    "build_timm_backbone",
    "SwinTransformer",
    "build_swin_backbone",
]
