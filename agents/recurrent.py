"""RecurrentPPO that also trains on binary (MultiBinary) actions, such as ChannelMask-v0's.

Why: since SB3 2.9 rollout buffers store actions in the action space's dtype (int8 for
MultiBinary). SB3's own buffers cast them to float when sampled; sb3-contrib 2.9's
recurrent buffers do not, and the Bernoulli log-probability then fails with "result type
Float can't be cast to ... Char". We keep sb3-contrib's algorithm and only store actions
as float32, which is what the policy consumes. Drop this once sb3-contrib casts itself.
"""

from __future__ import annotations

import numpy as np
import sb3_contrib
from gymnasium import spaces


def _float_actions(buffer_cls: type) -> type:
    class FloatActionBuffer(buffer_cls):
        def reset(self) -> None:
            super().reset()
            self.actions = self.actions.astype(np.float32)

    FloatActionBuffer.__name__ = f"Float{buffer_cls.__name__}"
    return FloatActionBuffer


class RecurrentPPO(sb3_contrib.RecurrentPPO):
    """sb3-contrib's RecurrentPPO, with float action storage for MultiBinary spaces."""

    def _setup_model(self) -> None:
        super()._setup_model()
        if isinstance(self.action_space, spaces.MultiBinary):
            self.rollout_buffer.__class__ = _float_actions(type(self.rollout_buffer))
            self.rollout_buffer.reset()
