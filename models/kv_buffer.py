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
from transformers.cache_utils import DynamicLayer


class SpareRoomLayer(DynamicLayer):
    """A DynamicLayer whose states live in a buffer with spare room; update() writes in place (the buffer
    grows, with a copy, only when the room runs out)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, spare_tokens: int):
        super().__init__()
        self.spare_tokens = max(int(spare_tokens), 1)
        self.device = keys.device
        self._keys = self._values = None
        self._length = 0
        self._store(keys, values)
        self.is_initialized = True

    def _room(self, need: int) -> None:
        if self._keys is not None and need <= self._keys.shape[-2]:
            return
        k, v = self._keys, self._values
        shape_k, shape_v = list(self.keys_like.shape), list(self.values_like.shape)
        shape_k[-2] = shape_v[-2] = need + self.spare_tokens
        self._keys, self._values = self.keys_like.new_empty(shape_k), self.values_like.new_empty(shape_v)
        if k is not None and self._length:
            self._keys[..., :self._length, :] = k[..., :self._length, :]
            self._values[..., :self._length, :] = v[..., :self._length, :]

    def _store(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys_like, self.values_like = key_states, value_states
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
