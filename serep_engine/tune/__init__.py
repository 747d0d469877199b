"""The animator's controls on a kept capture result (neutral calibration, strength, smoothing, head rest), applied
without the engine: numpy only, so that the add-on re-bakes in Blender's own Python."""

from serep_engine.tune.rebake import (HEAD_RESTS, Tuning, TuningError, find_neutral, frame_displacement, neutral_rows,
                                      relative_head_pose, retune, tuned_codes)
from serep_engine.tune.strength import REGIONS, region_maps, region_of, strength_matrix

__all__ = ["HEAD_RESTS", "REGIONS", "Tuning", "TuningError", "find_neutral", "frame_displacement", "neutral_rows",
           "region_maps", "region_of", "relative_head_pose", "retune", "strength_matrix", "tuned_codes"]
