"""Observations as torch-geometric batches: what a GNN policy reads.

Kept apart from :mod:`prune_gym.observations` because it is the one piece that needs
torch-geometric, and because the agents' feature extractors import it on their own; the
environments never call it. It is exported as ``prune_gym.to_pyg``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from gymnasium.spaces import GraphInstance

from prune_gym.errors import InvalidArgumentError
from prune_gym.observations import DECIDED_OUT, NUM_NODE_FEATURES, PADDED_KEYS
from prune_gym.topology import EDGE_TYPES


def _tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _graph_to_pyg(graph: GraphInstance):
    from torch_geometric.data import Batch

    x = _tensor(graph.nodes).float()
    links = _tensor(graph.edge_links).long().reshape(-1, 2)
    types = _tensor(graph.edges).long().reshape(-1)
    n = torch.tensor([0, x.shape[0]])
    data = Batch(x=x, edge_index=links.T.contiguous(), edge_type=types,
                 edge_attr=torch.nn.functional.one_hot(types, len(EDGE_TYPES)).float(),
                 batch=torch.zeros(x.shape[0], dtype=torch.long), ptr=n)
    data._num_graphs = 1
    return data


def to_pyg(obs):
    """A ``torch_geometric`` Batch from a padded observation, single or batched.

    Accepts one observation (dict of numpy arrays), a batch exactly as SB3 hands it to a
    features extractor (dict of float tensors with a leading batch dim), or a graph-mode
    ``GraphInstance`` (or a dict holding one under ``"graph"``). No Python loop runs over
    the batch: masked nodes and edges are selected with ``nonzero`` and renumbered with a
    cumulative sum, so the cost does not grow with Python overhead per graph.

    The Batch carries ``x`` (node features), ``edge_index`` (long), ``edge_type`` (long,
    index into ``EDGE_TYPES``), ``edge_attr`` (its one-hot, float), ``batch``, ``ptr``,
    ``block`` (per-graph block id, -1 outside blocks), ``group`` (the node->group key, -1
    where there is none or the observation lacks it), ``block_id`` (a cluster index unique
    over (graph, block), outside-block nodes of a graph forming one cluster) with
    ``block_batch`` (the graph of each cluster), ``globals`` (``(B, 4)``), ``current``
    (bool: the node's output channels are being decided) and ``current_node`` (per graph,
    the local index of its first such node, -1 if none). ``get_example(i)`` and
    ``to_data_list()`` work for the per-graph attributes.
    """
    from torch_geometric.data import Batch

    if isinstance(obs, GraphInstance):
        return _graph_to_pyg(obs)
    if isinstance(obs, Mapping) and isinstance(obs.get("graph"), GraphInstance):
        return _graph_to_pyg(obs["graph"])
    missing = [k for k in PADDED_KEYS if k not in obs]
    if missing:
        raise InvalidArgumentError(f"obs lacks {missing}: to_pyg needs a padded observation "
                                   f"(keys {list(PADDED_KEYS)}) or a GraphInstance")
    x = _tensor(obs["node_features"])
    single = x.dim() == 2

    def get(key: str) -> torch.Tensor:
        value = _tensor(obs[key]).to(x.device)
        return value.unsqueeze(0) if single else value

    def as_long(key: str) -> torch.Tensor:
        value = get(key)
        return value.round().long() if value.is_floating_point() else value.long()

    x = get("node_features").float()
    node_mask, edge_mask = get("node_mask") > 0.5, get("edge_mask") > 0.5
    edge_index, edge_type, block = as_long("edge_index"), as_long("edge_type"), as_long("block")
    num_graphs, width = node_mask.shape
    new_id = node_mask.reshape(-1).long().cumsum(0).view(num_graphs, width) - 1
    graph_of_node, node = node_mask.nonzero(as_tuple=True)
    graph_of_edge, edge = edge_mask.nonzero(as_tuple=True)
    src = new_id[graph_of_edge, edge_index[graph_of_edge, 0, edge]]
    dst = new_id[graph_of_edge, edge_index[graph_of_edge, 1, edge]]
    zero = torch.zeros(1, dtype=torch.long, device=x.device)
    ptr = torch.cat([zero, node_mask.sum(1).cumsum(0)])
    eptr = torch.cat([zero, edge_mask.sum(1).cumsum(0)])
    types = edge_type[graph_of_edge, edge]
    blocks = block[graph_of_node, node]
    if "group" in obs:
        group = as_long("group")[graph_of_node, node]
    else:
        group = torch.full_like(blocks, -1)
    feats = x[graph_of_node, node]
    current = feats[:, DECIDED_OUT] > 0.5 if feats.shape[1] == NUM_NODE_FEATURES else \
        torch.zeros(len(feats), dtype=torch.bool, device=x.device)
    local = torch.arange(len(feats), device=x.device) - ptr[graph_of_node]
    current_node = torch.full((num_graphs,), -1, dtype=torch.long, device=x.device)
    current_node.scatter_reduce_(0, graph_of_node[current], local[current], "amin",
                                 include_self=False)
    span = int(blocks.max()) + 2 if len(blocks) else 1
    clusters, block_id = torch.unique(graph_of_node * span + blocks + 1, return_inverse=True)
    batch = Batch(x=feats, edge_index=torch.stack([src, dst]), edge_type=types,
                  edge_attr=torch.nn.functional.one_hot(types, len(EDGE_TYPES)).float(),
                  batch=graph_of_node, ptr=ptr, block=blocks, group=group, block_id=block_id,
                  block_batch=clusters // span, globals=get("globals").float(),
                  current=current, current_node=current_node)
    batch._num_graphs = num_graphs
    per_graph = torch.arange(num_graphs + 1, device=x.device)
    none = torch.zeros(num_graphs, dtype=torch.long, device=x.device)
    batch._slice_dict = {"x": ptr, "edge_index": eptr, "edge_type": eptr, "edge_attr": eptr,
                         "block": ptr, "group": ptr, "current": ptr, "globals": per_graph,
                         "current_node": per_graph}
    batch._inc_dict = {"x": none, "edge_index": ptr[:-1], "edge_type": none, "edge_attr": none,
                       "block": none, "group": none, "current": none, "globals": none,
                       "current_node": none}
    return batch
