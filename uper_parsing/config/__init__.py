from .config import CfgNode, ConfigKeyError, all_keys, configurable, get_cfg

__all__ = ["CfgNode", "ConfigKeyError", "all_keys", "configurable", "get_cfg"]
