"""Token usage to money, at batch prices (half of the standard per-token price)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchline.settings import ModelPrice, Settings

BATCH_DISCOUNT = 0.5
CHARS_PER_TOKEN = 3.5  # a conservative guess for estimates before anything is sent
NANO = 1_000_000_000


def price_for(settings: Settings, model: str) -> ModelPrice | None:
    """The price of the longest model-name prefix in the table, or None."""
    best: tuple[int, ModelPrice] | None = None
    for prefix, price in settings.prices.items():
        if model.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), price)
    return best[1] if best else None


def cost_nusd(settings: Settings, model: str, usage: Mapping[str, Any]) -> int:
    """The batch cost of one message's usage, in nano-dollars (0 for an unknown model)."""
    price = price_for(settings, model)
    if price is None:
        return 0
    cache_write = price.cache_write if price.cache_write is not None else price.input * 1.25
    cache_read = price.cache_read if price.cache_read is not None else price.input * 0.1
    usd_per_mtok = (
        (usage.get("input_tokens") or 0) * price.input
        + (usage.get("output_tokens") or 0) * price.output
        + (usage.get("cache_creation_input_tokens") or 0) * cache_write
        + (usage.get("cache_read_input_tokens") or 0) * cache_read
    )
    return round(usd_per_mtok * BATCH_DISCOUNT * NANO / 1_000_000)


def estimate_cost_usd(settings: Settings, model: str, prompt_chars: int, max_tokens: int) -> float:
    """An upper-bound guess of a request's batch cost: its prompt plus max_tokens of output."""
    price = price_for(settings, model)
    if price is None:
        return 0.0
    tokens_in = prompt_chars / CHARS_PER_TOKEN + 8
    return (tokens_in * price.input + max_tokens * price.output) * BATCH_DISCOUNT / 1_000_000
