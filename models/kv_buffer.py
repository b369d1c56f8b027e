"""A KV-cache layer with spare room, for batched greedy decoding.

transformers' DynamicLayer appends each decode step's keys and values by concatenation, copying the
whole cache every step; at batch 16 on the tiny model that copy was about half of a decode step's
CPU time. SpareRoomLayer holds the states in a buffer with room for the tokens still to come and
writes each step's states in place; keys/values are views of the filled part, so attention reads the
same numbers as with the concatenated cache.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class SpareRoomLayer(DynamicLayer):
    """A DynamicLayer whose states live in a buffer with spare room; update() writes in place (the buffer
    grows, with a copy, only when the room runs out)."""

    def __init__(self, keys: torch.Tensor | list[torch.Tensor], values: torch.Tensor | list[torch.Tensor],
                 spare_tokens: int):
        """States `keys`/`values` (batch, heads, tokens, dim), or lists of such parts of equal length to
        join along the batch, with room for `spare_tokens` more tokens."""
        super().__init__()
        self.spare_tokens = max(int(spare_tokens), 1)
        keys = keys if isinstance(keys, list) else [keys]
        values = values if isinstance(values, list) else [values]
        self.device = keys[0].device
        self._keys = self._values = None
        self._length = 0
        self.keys_like, self.values_like = keys[0], values[0]
        n, b = int(keys[0].shape[-2]), sum(int(k.shape[0]) for k in keys)
        self._room(n, batch=b)
        start = 0
        for k, v in zip(keys, values):
            self._keys[start:start + k.shape[0], ..., :n, :] = k
            self._values[start:start + k.shape[0], ..., :n, :] = v
            start += k.shape[0]
        self._length = n
        self.keys, self.values = self._keys[..., :n, :], self._values[..., :n, :]
        self.is_initialized = True

    def _room(self, need: int, batch: int | None = None) -> None:
        if self._keys is not None and need <= self._keys.shape[-2]:
            return
        k, v = self._keys, self._values
        shape_k, shape_v = list(self.keys_like.shape), list(self.values_like.shape)
        shape_k[-2] = shape_v[-2] = need + self.spare_tokens
        shape_k[0] = shape_v[0] = batch if k is None else k.shape[0]
        self._keys, self._values = self.keys_like.new_empty(shape_k), self.values_like.new_empty(shape_v)
        if k is not None and self._length:   # grows: the filled part moves to the larger buffer
            self._keys[..., :self._length, :] = k[..., :self._length, :]
            self._values[..., :self._length, :] = v[..., :self._length, :]

    def _store(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        n, m = self._length, int(key_states.shape[-2])
        self._room(n + m)
        self._keys[..., n:n + m, :] = key_states
        self._values[..., n:n + m, :] = value_states
        self._length = n + m
        self.keys, self.values = self._keys[..., :n + m, :], self._values[..., :n + m, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        self._store(key_states, value_states)
        return self.keys, self.values


def with_spare_room(cache: Any, spare_tokens: int) -> Any:
    """The cache with each filled plain DynamicLayer swapped for a SpareRoomLayer (one copy each) holding
    room for `spare_tokens` more tokens; other layer kinds (sliding windows, static) stay as they are."""
    cache.layers = [SpareRoomLayer(layer.keys, layer.values, spare_tokens)
                    if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None
                    and layer.keys.dim() == 4 else layer
                    for layer in cache.layers]
    return cache


def joined_with_spare_room(caches: list[Any], spare_tokens: int, config: Any) -> Any:
    """One DynamicCache of SpareRoomLayers joining the caches' layers along the batch (chunked prefills
    of one batch, all of one length), with room for `spare_tokens` more tokens; one copy of the states."""
    if len(caches) == 1:
        return with_spare_room(caches[0], spare_tokens)
    if not all(type(layer) is DynamicLayer and layer.is_initialized for c in caches for layer in c.layers):
        return with_spare_room(DynamicCache(ddp_cache_data=[
            (torch.cat([c.layers[i].keys for c in caches]), torch.cat([c.layers[i].values for c in caches]))
            for i in range(len(caches[0].layers))], config=config), spare_tokens)
    cache = DynamicCache(config=config)
    cache.layers = [SpareRoomLayer([c.layers[i].keys for c in caches], [c.layers[i].values for c in caches],
                                   spare_tokens)
                    for i in range(len(caches[0].layers))]
    return cache
