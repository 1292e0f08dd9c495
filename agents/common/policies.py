"""GraphPolicy: per-node action heads on graph embeddings, so that one policy acts on
networks of any size.

SB3's ``MultiInputPolicy`` maps a fixed feature vector to a fixed action vector: its output
``i`` means "group ``i``" of the network it was trained on. :class:`GraphPolicy` instead
computes each action dimension from the embeddings of the nodes it concerns, with weights
shared by all of them, so the same policy acts on any network observed with the same
``max_*`` sizes (e.g. trained on ``digits-cnn-v1``, run on ``digits-resnet-v1``):

* ``DNNGraph-v0`` (``action_head="group"``): the Gaussian mean of group ``g`` is read from
  the mean embedding of the nodes whose ``group`` key is ``g`` (a scatter-mean), joined
  with the policy latent; groups the network lacks (padding up to ``max_groups``) are masked.
* ``LayerRatio-v0`` (``"current"``): the head reads the node being decided (``current_node``).
* For both Box heads the Gaussian mean is squashed into [-1, 1] by tanh (samples are not),
  so that exploration never collapses onto the clipped bound.
* ``ChannelMask-v0`` (``"channel"``): one Bernoulli per channel from its ``channel_features``,
  the current node's embedding and the policy latent; channels with ``channel_mask == 0``
  are never set and add 0 to log-probability and entropy (so no action mask is needed).

The log-std is one number for all dimensions. SB3's value path is untouched:
``extract_features(obs)`` -> ``mlp_extractor.forward_critic`` -> ``value_net``, so algorithms
that add critics on the critic latent (PPOLagrangian's cost critic) work unchanged.

Importing this module registers the alias, so ``PPO("GraphPolicy", env)`` (and A2C's) works.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import nn
from torch_geometric.utils import scatter

from agents.common.distributions import (
    MaskedBernoulliDistribution,
    MaskedDiagGaussianDistribution,
)
from agents.common.torch_layers import (
    CHANNEL_KEYS,
    GATExtractor,
    GraphEmbedding,
    GraphExtractor,
    check_graph_space,
)
from prune_gym.errors import InvalidArgumentError

ACTION_HEADS = ("auto", "group", "current", "channel")


def _needs(action_space: spaces.Space, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"GraphPolicy cannot act in action_space={action_space}: {what}. It supports "
        "DNNGraph-v0 (Box(-1, 1, (max_groups,)) with the observation's 'group' key), "
        "LayerRatio-v0 (Box(-1, 1, (1,))) and ChannelMask-v0 (MultiBinary(max_channels) "
        f"with {list(CHANNEL_KEYS)} in the observation)")


def resolve_action_head(observation_space: spaces.Dict, action_space: spaces.Space,
                        action_head: str = "auto") -> str:
    """Which per-node head fits the spaces (see the module docstring); ``"auto"`` infers it.

    Raises:
        InvalidArgumentError: unknown ``action_head``, or one the spaces cannot serve.
    """
    if action_head not in ACTION_HEADS:
        raise InvalidArgumentError(f"action_head={action_head!r} is not one of {ACTION_HEADS}")
    obs = observation_space.spaces
    if isinstance(action_space, spaces.MultiBinary):
        if action_head not in ("auto", "channel"):
            raise _needs(action_space, f"action_head={action_head!r} needs a Box action")
        if not all(k in obs for k in CHANNEL_KEYS) or \
                obs["channel_features"].shape[0] != action_space.n or \
                tuple(action_space.shape) != (action_space.n,):
            raise _needs(action_space, f"a per-channel action needs {list(CHANNEL_KEYS)} with "
                                       "one row per action bit")
        return "channel"
    if not (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1):
        raise _needs(action_space, "the action space is neither a 1-D Box nor MultiBinary")
    if action_head == "channel":
        raise _needs(action_space, "action_head='channel' needs a MultiBinary action")
    width = action_space.shape[0]
    has_group = "group" in obs and int(obs["group"].high.max()) + 1 == width
    if action_head == "group" or (action_head == "auto" and width > 1):
        if not has_group:
            raise _needs(action_space, f"a ratio per group needs the observation's 'group' key "
                                       f"with max_groups == {width} (the action's length)")
        return "group"
    if width != 1:
        raise _needs(action_space, "action_head='current' acts on one group: Box of shape (1,)")
    return "current"


class NodeActionHead(nn.Module):
    """One small MLP applied to every node-level input (group, current node or channel).

    Args:
        mode: ``"group"``, ``"current"`` or ``"channel"``.
        action_dim: length of the action vector (``max_groups``, 1 or ``max_channels``).
        node_dim: size of a node embedding.
        latent_dim: size of the policy latent (``mlp_extractor.latent_dim_pi``).
        channel_dim: number of per-channel features (``"channel"`` mode).
        hidden: the MLP's hidden width.
    """

    def __init__(self, mode: str, action_dim: int, node_dim: int, latent_dim: int,
                 channel_dim: int = 0, hidden: int = 64):
        super().__init__()
        self.mode, self.action_dim = mode, action_dim
        width = node_dim + latent_dim + (channel_dim if mode == "channel" else 0)
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, extractor: GraphExtractor, emb: GraphEmbedding, latent_pi: torch.Tensor,
                obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, action_dim)`` distribution parameters and the mask of real dimensions."""
        size, width = latent_pi.shape[0], self.action_dim
        if self.mode == "group":
            group = emb.batch.group
            valid = (group >= 0) & (group < width)
            slot = (emb.batch.batch * width + group)[valid]
            pooled = scatter(emb.nodes[valid], slot, 0, dim_size=size * width, reduce="mean")
            count = scatter(torch.ones_like(slot), slot, 0, dim_size=size * width, reduce="sum")
            inputs = torch.cat([pooled.view(size, width, -1),
                                latent_pi.unsqueeze(1).expand(size, width, -1)], 2)
            mask = (count > 0).view(size, width).to(latent_pi)
        elif self.mode == "current":
            inputs = torch.cat([extractor.current_embedding(emb), latent_pi], 1).unsqueeze(1)
            mask = torch.ones(size, 1, dtype=latent_pi.dtype, device=latent_pi.device)
        else:
            current = extractor.current_embedding(emb)
            context = torch.cat([current, latent_pi], 1).unsqueeze(1).expand(size, width, -1)
            inputs = torch.cat([obs["channel_features"].float(), context], 2)
            mask = (obs["channel_mask"] > 0.5).to(latent_pi)
        out = self.net(inputs).squeeze(-1)
        if self.mode != "channel":
            # The Gaussian mean stays inside the action box (the samples do not): an
            # unbounded mean drifts past -1 ("prune nothing"), every sample is then clipped
            # to the same action, episodes stop differing, and both advantages, reward and
            # cost, become exactly 0, so no Lagrange multiplier can pull the policy back.
            out = torch.tanh(out)
        return out * mask, mask


class GraphPolicy(ActorCriticPolicy):
    """An ``ActorCriticPolicy`` whose actor is a per-node head on graph embeddings.

    Use it as ``PPO(GraphPolicy, env)`` or ``PPO("GraphPolicy", env)`` (also with A2C and
    SB3 ``PPO`` subclasses). Everything SB3's ``ActorCriticPolicy`` takes is accepted; the
    features extractor defaults to :class:`~agents.common.torch_layers.GATExtractor` and
    must be a :class:`~agents.common.torch_layers.GraphExtractor`.

    Args:
        observation_space: a prune-gym padded graph ``Dict`` space.
        action_space: the env's action space (see :func:`resolve_action_head`).
        lr_schedule: SB3's learning-rate schedule.
        action_head: ``"auto"`` (default: inferred from the spaces), ``"group"``,
            ``"current"`` or ``"channel"``.
        head_hidden: hidden width of the per-node head.
        **kwargs: passed to ``ActorCriticPolicy`` (``net_arch``, ``features_extractor_kwargs``...).

    Raises:
        InvalidArgumentError: the env has no graph observation, its action space has no
            per-node head, ``use_sde`` is set, or the extractor is not a graph extractor.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 lr_schedule, *, action_head: str = "auto", head_hidden: int = 64,
                 features_extractor_class: type = GATExtractor, **kwargs: Any):
        check_graph_space(observation_space, "GraphPolicy (the env's observation space)")
        self.action_head = resolve_action_head(observation_space, action_space, action_head)
        if not (isinstance(features_extractor_class, type)
                and issubclass(features_extractor_class, GraphExtractor)):
            raise InvalidArgumentError(
                f"features_extractor_class={features_extractor_class!r}: GraphPolicy needs "
                "per-node embeddings, from GATExtractor, MultiStageGNNExtractor or another "
                "agents.common.torch_layers.GraphExtractor")
        if kwargs.get("use_sde"):
            raise InvalidArgumentError("use_sde=True: GraphPolicy's Gaussian is per node with "
                                       "one log-std; gSDE is not supported, pass use_sde=False")
        if isinstance(head_hidden, bool) or not isinstance(head_hidden, int) or head_hidden < 1:
            raise InvalidArgumentError(f"head_hidden={head_hidden!r} must be a positive integer")
        self.head_hidden = head_hidden
        super().__init__(observation_space, action_space, lr_schedule,
                         features_extractor_class=features_extractor_class, **kwargs)

    def _build(self, lr_schedule) -> None:
        """SB3's build, then the per-node head and a shared log-std in place of SB3's
        per-dimension ones (the optimizer is rebuilt so that it holds them)."""
        super()._build(lr_schedule)
        action_dim = int(self.action_space.shape[0]) if self.action_head != "channel" \
            else int(self.action_space.n)
        channel_dim = self.observation_space["channel_features"].shape[1] \
            if self.action_head == "channel" else 0
        self.action_net = NodeActionHead(self.action_head, action_dim,
                                         self.features_extractor.node_dim,
                                         self.mlp_extractor.latent_dim_pi, channel_dim,
                                         self.head_hidden)
        if self.action_head == "channel":
            self.action_dist = MaskedBernoulliDistribution(action_dim)
        else:
            self.action_dist = MaskedDiagGaussianDistribution(action_dim)
            self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))
        if self.ortho_init:  # SB3's gains: sqrt(2) inside, 0.01 on the output layer
            self.action_net.net[0].apply(lambda m: self.init_weights(m, gain=2 ** 0.5))
            self.action_net.net[-1].apply(lambda m: self.init_weights(m, gain=0.01))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),
                                              **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(action_head=self.action_head, head_hidden=self.head_hidden)
        return data

    def _actor(self, obs) -> tuple[Distribution, torch.Tensor, dict[str, torch.Tensor]]:
        """The action distribution, the actor's features and the preprocessed observation,
        from one graph embedding."""
        preprocessed = preprocess_obs(obs, self.observation_space,
                                      normalize_images=self.normalize_images)
        extractor = self.pi_features_extractor
        emb = extractor.embed(preprocessed)
        features = extractor.features(preprocessed, emb)
        latent_pi = self.mlp_extractor.forward_actor(features)
        params, mask = self.action_net(extractor, emb, latent_pi, preprocessed)
        if self.action_head == "channel":
            distribution = self.action_dist.proba_distribution(params, mask)
        else:
            distribution = self.action_dist.proba_distribution(params, self.log_std, mask)
        return distribution, features, preprocessed

    def _values(self, preprocessed: dict[str, torch.Tensor], actor_features: torch.Tensor
                ) -> torch.Tensor:
        """SB3's critic on the actor's features (shared extractor) or the critic's own."""
        features = actor_features if self.share_features_extractor else \
            self.vf_features_extractor(preprocessed)
        return self.value_net(self.mlp_extractor.forward_critic(features))

    def forward(self, obs, deterministic: bool = False):
        distribution, features, preprocessed = self._actor(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        values = self._values(preprocessed, features)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(self, obs, actions: torch.Tensor):
        distribution, features, preprocessed = self._actor(obs)
        return self._values(preprocessed, features), distribution.log_prob(actions), \
            distribution.entropy()

    def get_distribution(self, obs) -> Distribution:
        return self._actor(obs)[0]


# The string alias: SB3 looks policies up in the algorithm's ``policy_aliases`` dict, which
# PPO subclasses inherit; a fresh dict leaves SB3's own untouched for other classes.
for _algo in (PPO, A2C):
    _algo.policy_aliases = {**_algo.policy_aliases, "GraphPolicy": GraphPolicy}
