"""Pre-training objectives of LuMamba: masked reconstruction, query specialisation, LeJEPA (SIGReg)."""
from .lejepa import LeJEPALoss, crop_views, embed_views, lejepa_loss, sample_crop_starts
from .masking import expand_patch_mask, masked_cell_count, random_patch_mask
from .mixed import MODES, ObjectiveConfig, PretrainDraw, PretrainObjective
from .query_specialisation import query_specialisation_loss
from .reconstruction import ReconstructionLoss, masked_reconstruction_loss
from .sigreg import epps_pulley, random_directions, sigreg

__all__ = [
    "LeJEPALoss", "crop_views", "embed_views", "lejepa_loss", "sample_crop_starts",
    "expand_patch_mask", "masked_cell_count", "random_patch_mask",
    "MODES", "ObjectiveConfig", "PretrainDraw", "PretrainObjective",
    "query_specialisation_loss", "ReconstructionLoss", "masked_reconstruction_loss",
    "epps_pulley", "random_directions", "sigreg",
]
