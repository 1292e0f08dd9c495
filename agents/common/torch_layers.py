"""Graph feature extractors: read prune-gym's padded graph observation with torch-geometric.

Both extractors are Stable-Baselines3 ``BaseFeaturesExtractor`` subclasses, so the "thin"
usage works as is::

    PPO("MultiInputPolicy", env, policy_kwargs=dict(features_extractor_class=GATExtractor))

Each turns an SB3 batch (a dict of float tensors) into one PyG batch with
:func:`prune_gym.to_pyg` (padding dropped, no Python loop over the batch), embeds every
real node, and pools a graph embedding over real nodes only, so that neither the batch it
sits in nor the padding of the observation changes a result. :meth:`GraphExtractor.embed`
exposes the per-node embeddings, which :class:`agents.common.policies.GraphPolicy` reads.

The feature vector handed to SB3's heads is, in this order: masked mean and max of the node
embeddings, the ``globals``, the embedding of the node being decided (zeros when none), and,
when the env adds them, a per-channel encoding of ``channel_features`` (zeroed where
``channel_mask`` is 0, flattened so that a plain head can act per channel, plus its masked
mean) and any other extra key, flattened. Its size depends only on the space's shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch_geometric.nn import GATv2Conv, RGCNConv, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter

from prune_gym import to_pyg
from prune_gym.errors import InvalidArgumentError
from prune_gym.observations import NUM_GLOBAL_FEATURES, OPTIONAL_KEYS, PADDED_KEYS
from prune_gym.topology import EDGE_TYPES

CHANNEL_KEYS = ("channel_features", "channel_mask")
# Edge features seen by the convolutions: the edge type (one-hot), then two flags of ours.
# Data flows one way, but pruning a node matters to its producers and its consumers alike,
# so every edge is also read backwards (flag "reverse"); GAT attends to the node itself
# through a self-loop whose feature is its own flag, not an average of real edges.
EDGE_DIM = len(EDGE_TYPES) + 2
_REVERSE, _SELF = len(EDGE_TYPES), len(EDGE_TYPES) + 1
NUM_RELATIONS = 2 * len(EDGE_TYPES)  # (edge type, direction): the m-GNN's message kinds


class GraphEmbedding(NamedTuple):
    """What an extractor computes before SB3's heads: unpacks as ``(batch, nodes, graph)``.

    Attributes:
        batch: the ``torch_geometric`` Batch of real nodes (see :func:`prune_gym.to_pyg`).
        nodes: ``(num_real_nodes, node_dim)`` per-node embeddings, in ``batch`` order.
        graph: ``(B, 2 * node_dim + 4)``: masked mean and max of ``nodes``, then ``globals``.
    """

    batch: object
    nodes: torch.Tensor
    graph: torch.Tensor


def check_graph_space(observation_space: spaces.Space, who: str) -> spaces.Dict:
    """The padded graph ``Dict`` space, or an :class:`InvalidArgumentError` saying why not."""
    if isinstance(observation_space, spaces.Graph) or (
            isinstance(observation_space, spaces.Dict) and "graph" in observation_space.spaces):
        raise InvalidArgumentError(
            f"{who} got observation_space={observation_space}, the obs_mode='graph' encoding, "
            "which SB3 cannot batch; make the env with obs_mode='padded' (the default)")
    keys = set(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else set()
    missing = [k for k in PADDED_KEYS if k not in keys]
    if missing:
        raise InvalidArgumentError(
            f"{who} needs a prune-gym graph observation: observation_space must be a Dict "
            f"with keys {list(PADDED_KEYS)} (a prune-gym env with obs_mode='padded'); got "
            f"observation_space={observation_space} (missing {missing})")
    return observation_space


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r} must be a positive integer")
    return value


def graph_edges(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both directions of every edge: ``(edge_index, features, relation)``, with
    :data:`EDGE_DIM` features and the relation ``2 * edge_type + reversed`` (no self-loops)."""
    attr = batch.edge_attr.new_zeros(batch.edge_attr.shape[0], EDGE_DIM)
    attr[:, : len(EDGE_TYPES)] = batch.edge_attr
    back = attr.clone()
    back[:, _REVERSE] = 1.0
    index = torch.cat([batch.edge_index, batch.edge_index.flip(0)], 1)
    relation = torch.cat([2 * batch.edge_type, 2 * batch.edge_type + 1])
    return index, torch.cat([attr, back]), relation


class GraphExtractor(BaseFeaturesExtractor):
    """Shared part of the graph extractors: space checks, pooling, the feature layout.

    Subclasses set :attr:`node_dim` and implement :meth:`node_embeddings`.

    Args:
        observation_space: a prune-gym padded graph ``Dict`` space.
        node_dim: size of one node embedding.
        channel_dim: size of the per-channel encoding of ``channel_features`` (when present).

    Raises:
        InvalidArgumentError: ``observation_space`` is not a padded graph space.
    """

    def __init__(self, observation_space: spaces.Dict, node_dim: int, channel_dim: int = 8):
        space = check_graph_space(observation_space, type(self).__name__)
        channel_dim = _positive(channel_dim, "channel_dim")
        has_channels = all(k in space.spaces for k in CHANNEL_KEYS)
        max_channels, channel_in = space["channel_features"].shape if has_channels else (0, 0)
        known = set(PADDED_KEYS) | set(OPTIONAL_KEYS) | (set(CHANNEL_KEYS) if has_channels
                                                          else set())
        extra_keys = sorted(k for k in space.spaces if k not in known)
        extra_dim = sum(get_flattened_obs_dim(space[k]) for k in extra_keys)
        graph_dim = 2 * node_dim + NUM_GLOBAL_FEATURES
        channel_total = (max_channels + 1) * channel_dim if has_channels else 0
        super().__init__(observation_space, graph_dim + node_dim + channel_total + extra_dim)
        self.node_dim, self.graph_dim = node_dim, graph_dim
        self.num_node_features = space["node_features"].shape[1]
        self.max_channels = max_channels
        self.extra_keys = extra_keys
        self.channel_net = nn.Sequential(nn.Linear(channel_in, channel_dim), nn.ReLU()) \
            if has_channels else None

    def node_embeddings(self, batch) -> torch.Tensor:
        """``(num_real_nodes, node_dim)`` embeddings of a PyG batch from ``to_pyg``."""
        raise NotImplementedError

    def embed(self, observations: dict[str, torch.Tensor]) -> GraphEmbedding:
        """Per-node and per-graph embeddings of a batch of (SB3-preprocessed) observations."""
        batch = to_pyg(observations)
        nodes = self.node_embeddings(batch)
        size = batch.num_graphs
        graph = torch.cat([global_mean_pool(nodes, batch.batch, size),
                           global_max_pool(nodes, batch.batch, size), batch.globals], 1)
        return GraphEmbedding(batch, nodes, graph)

    def current_embedding(self, emb: GraphEmbedding) -> torch.Tensor:
        """``(B, node_dim)``: the embedding of each graph's node being decided, 0 if none."""
        local = emb.batch.current_node
        index = (emb.batch.ptr[:-1] + local.clamp(min=0)).clamp(max=max(len(emb.nodes) - 1, 0))
        return emb.nodes[index] * (local >= 0).unsqueeze(1).to(emb.nodes.dtype)

    def features(self, observations: dict[str, torch.Tensor], emb: GraphEmbedding
                 ) -> torch.Tensor:
        """The flat feature vector SB3's heads read (see the module docstring)."""
        parts = [emb.graph, self.current_embedding(emb)]
        if self.channel_net is not None:
            mask = observations["channel_mask"].float().unsqueeze(-1)
            chans = self.channel_net(observations["channel_features"].float()) * mask
            mean = chans.sum(1) / mask.sum(1).clamp(min=1.0)
            parts += [chans.flatten(1), mean]
        parts += [observations[k].float().flatten(1) for k in self.extra_keys]
        return torch.cat(parts, 1)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.features(observations, self.embed(observations))


class GATExtractor(GraphExtractor):
    """Graph attention over the network graph (the encoder of Balemans et al. 2025).

    A linear input layer, then ``layers`` ``GATv2Conv`` layers (``heads`` heads whose outputs
    are concatenated to ``hidden``) that read the edge type, its direction and a self-loop
    flag as edge features, each with a residual connection and ELU.

    Args:
        observation_space: a prune-gym padded graph ``Dict`` space.
        hidden: node embedding size (a multiple of ``heads``).
        layers: number of attention layers.
        heads: attention heads per layer.
        channel_dim: size of the per-channel encoding (ChannelMask-v0's ``channel_features``).

    Raises:
        InvalidArgumentError: ``observation_space`` is not a padded graph space, or a size
            is not a positive integer, or ``hidden`` is not a multiple of ``heads``.
    """

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, layers: int = 2,
                 heads: int = 4, channel_dim: int = 8):
        hidden, heads = _positive(hidden, "hidden"), _positive(heads, "heads")
        layers = _positive(layers, "layers")
        if hidden % heads:
            raise InvalidArgumentError(f"hidden={hidden} must be a multiple of heads={heads} "
                                       "(the heads' outputs are concatenated)")
        super().__init__(observation_space, hidden, channel_dim)
        self.input = nn.Linear(self.num_node_features, hidden)
        self.convs = nn.ModuleList(
            GATv2Conv(hidden, hidden // heads, heads=heads, edge_dim=EDGE_DIM,
                      add_self_loops=False) for _ in range(layers))
        self.act = nn.ELU()

    def node_embeddings(self, batch) -> torch.Tensor:
        index, attr, _ = graph_edges(batch)
        n = batch.x.shape[0]
        loops = torch.arange(n, device=index.device)
        self_attr = attr.new_zeros(n, EDGE_DIM)
        self_attr[:, _SELF] = 1.0
        index = torch.cat([index, torch.stack([loops, loops])], 1)
        attr = torch.cat([attr, self_attr])
        h = self.act(self.input(batch.x))
        for conv in self.convs:
            h = h + self.act(conv(h, index, attr))
        return h


class MultiStageGNNExtractor(GraphExtractor):
    """GNN-RL's multi-stage GNN (m-GNN, Yu et al. 2022) on prune-gym's graph.

    Stage 1 embeds the nodes of each block (the observation's ``block`` ids: residual blocks
    and other repeated motifs) over the edges inside that block, with one set of weights
    shared by all blocks, and pools (mean) a block embedding. Stage 2 runs over the coarse
    graph whose vertices are the blocks and the nodes outside blocks, linked wherever an
    edge joins two of them. A node's embedding is its stage-1 embedding joined with the
    stage-2 embedding of its block (or of itself, outside blocks): ``2 * hidden`` values.

    Messages are edge-conditioned: the edge's type and direction choose the message's weight
    matrix (torch-geometric's relational ``RGCNConv``, mean aggregation, plus a weight for
    the node itself), the counterpart of GNN-RL's ``x_j * e_ij`` messages. (``NNConv``
    computes the same from one-hot edge features, but materialises a weight matrix per edge:
    10-20x slower on a batch of 64 ResNet-56 graphs.) Node features are the observation's,
    never random, and every graph of a batch is embedded on its own (GNN-RL's encoder gives
    every sample the first one's embedding). ``tanh`` follows GNN-RL; its dropout is left
    out, as it would make the policy's probabilities random.

    Args:
        observation_space: a prune-gym padded graph ``Dict`` space.
        hidden: size of each stage's embedding.
        stage1_layers: message-passing layers inside blocks.
        stage2_layers: message-passing layers over the graph of blocks.
        channel_dim: size of the per-channel encoding (ChannelMask-v0's ``channel_features``).

    Raises:
        InvalidArgumentError: ``observation_space`` is not a padded graph space, or a size
            is not a positive integer.
    """

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, stage1_layers: int = 1,
                 stage2_layers: int = 1, channel_dim: int = 8):
        hidden = _positive(hidden, "hidden")
        stage1_layers = _positive(stage1_layers, "stage1_layers")
        stage2_layers = _positive(stage2_layers, "stage2_layers")
        super().__init__(observation_space, 2 * hidden, channel_dim)
        self.input = nn.Linear(self.num_node_features, hidden)

        def conv() -> RGCNConv:
            return RGCNConv(hidden, hidden, NUM_RELATIONS, aggr="mean")

        self.stage1 = nn.ModuleList(conv() for _ in range(stage1_layers))
        self.block_pool = nn.Linear(hidden, hidden)
        self.stage2 = nn.ModuleList(conv() for _ in range(stage2_layers))

    def node_embeddings(self, batch) -> torch.Tensor:
        index, _, relation = graph_edges(batch)
        src, dst = index
        n = batch.x.shape[0]
        # stage 1: only edges inside one block (block_id is unique over (graph, block))
        inside = (batch.block[src] >= 0) & (batch.block_id[src] == batch.block_id[dst])
        h1 = torch.tanh(self.input(batch.x))
        for conv in self.stage1:
            h1 = torch.tanh(conv(h1, index[:, inside], relation[inside]))
        # stage 2: one vertex per block and per node outside blocks
        key = torch.where(batch.block >= 0, batch.block_id,
                          batch.block_id.new_tensor(n) + torch.arange(n, device=src.device))
        _, unit = torch.unique(key, return_inverse=True)
        units = int(unit.max()) + 1 if n else 0
        h2 = torch.tanh(self.block_pool(scatter(h1, unit, 0, dim_size=units, reduce="mean")))
        between = unit[src] != unit[dst]
        coarse = torch.stack([unit[src], unit[dst]])[:, between]
        for conv in self.stage2:
            h2 = torch.tanh(conv(h2, coarse, relation[between]))
        return torch.cat([h1, h2[unit]], 1)
