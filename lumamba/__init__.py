"""LuMamba: the EEG foundation model and its edge-deployment toolchain."""
from .checkpoint import CheckpointError, load_pretrained, save_checkpoint
from .config import CONFIGS, LuMambaConfig, get_config
from .model import LuMamba

__all__ = ["LuMamba", "LuMambaConfig", "CONFIGS", "get_config", "load_pretrained", "save_checkpoint",
           "CheckpointError"]
__version__ = "0.1.0"
