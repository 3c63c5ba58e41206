from .config import CfgNode, ConfigKeyError, all_keys, configurable, get_cfg
from .unsupported import UnsupportedKey, reject_unsupported_keys, unsupported_key_errors

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "UnsupportedKey",
    "all_keys",
    "configurable",
    "get_cfg",
    "reject_unsupported_keys",
    "unsupported_key_errors",
]
