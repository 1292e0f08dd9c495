"""AMC (He et al., ECCV 2018, "AutoML for Model Compression and Acceleration on Mobile
Devices") on LayerRatio-v0: its state, action, reward, exploration and credit assignment
around SB3's DDPG and TD3. ``agents.train(preset="amc")`` (or ``"amc-td3"``) runs it end to
end; the facts come from the reference code, github.com/mit-han-lab/amc (cited per file).
"""

from __future__ import annotations

from agents.amc.algorithms import AMC_HYPERPARAMETERS, AMC_NET_ARCH, AMCDDPG, AMCTD3
from agents.amc.buffer import EpisodeRewardBuffer
from agents.amc.env import ErrorReward, PreserveRatioAction, check_amc_env, wrap_amc
from agents.amc.noise import TruncatedNormalNoise
from agents.amc.state import FEATURES, STATE_SIZE, AMCObservation, layer_table

__all__ = ["AMCDDPG", "AMCTD3", "AMC_HYPERPARAMETERS", "AMC_NET_ARCH", "FEATURES",
           "STATE_SIZE", "AMCObservation", "EpisodeRewardBuffer", "ErrorReward",
           "PreserveRatioAction", "TruncatedNormalNoise", "check_amc_env", "layer_table",
           "wrap_amc"]
