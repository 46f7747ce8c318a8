"""Generated jobs of realistic requests: about 1 KB of JSON each, deterministic for a seed."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

TARGET_REQUEST_BYTES = 1000
DEFAULT_SEED = 7
MODEL = "claude-haiku-4-5"
MAX_TOKENS = 512
# The level Batchline stores requests with (batchline.wire.COMPRESS_LEVEL).
COMPRESS_LEVEL = 1

SYSTEM_PROMPTS = (
    "You classify customer support tickets. Answer with one label from: billing, "
    "shipping, returns, account, technical, other. Then give a one-sentence reason.",
    "You summarise product reviews for a merchandising team. Keep the summary under "
    "forty words and list the main complaint and the main praise, if any.",
    "You extract structured fields from an invoice email: vendor, amount, currency, "
    "due date. Answer as compact JSON with those four keys and nothing else.",
    "You translate short marketing copy into plain English for an internal wiki. "
    "Keep product names unchanged and do not add claims that are not in the text.",
)

VOCABULARY = (
    "order account delivery refund package invoice customer payment card address "
    "warehouse tracking number week yesterday morning support team product quality "
    "screen battery charger cable replacement warranty store online website app login "
    "password email update subscription plan monthly annual discount coupon price total "
    "tax shipping courier damaged missing late early arrived opened box colour size "
    "fits small large medium return label printer portal message chat phone call agent "
    "waiting hours days please help thanks again unfortunately still never always "
    "however because although when while after before since until during about "
    "really quite very rather somewhat completely simply honestly clearly probably "
    "the a an and or but if so of to in on for with at by from as is was were be been "
    "have has had do does did not no can could would should will may might must "
    "I you we they it this that these those my your our their its me us them"
)
WORDS = tuple(VOCABULARY.split())


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        sentence = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
        sentence[0] = sentence[0].capitalize()
        text = " ".join(sentence) + rng.choice((".", ".", ".", "?", "!"))
        words.append(text)
        length += len(text) + 1
    return " ".join(words)[:size]


def request(index: int, rng: random.Random) -> dict[str, Any]:
    """One request in the API's native form ({"custom_id", "params"})."""
    system = SYSTEM_PROMPTS[index % len(SYSTEM_PROMPTS)]
    # The envelope (custom_id, model, keys) is about 150 bytes; the ticket fills the rest.
    body = TARGET_REQUEST_BYTES - 150 - len(system)
    ticket = f"Ticket #{100000 + index}. " + _text(rng, body + rng.randint(-60, 60))
    return {
        "custom_id": f"req-{index:07d}",
        "params": {
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "system": system,
            "messages": [{"role": "user", "content": ticket}],
        },
    }


def requests(count: int, seed: int = DEFAULT_SEED) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(count):
        yield request(i, rng)


@dataclass(frozen=True)
class Job:
    """A generated JSONL file and what it holds."""

    path: Path
    count: int
    body_bytes: int  # the create body of all requests: {"requests":[...]}
    avg_request_bytes: float
    avg_compressed_bytes: float  # zlib level 1 of each request's wire JSON


def write_job(path: Path, count: int, seed: int = DEFAULT_SEED) -> Job:
    """Write `count` requests as JSONL and measure their sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    compressed = 0
    with open(path, "wb") as f:
        for req in requests(count, seed):
            wire = orjson.dumps(req)
            total += len(wire)
            compressed += len(zlib.compress(wire, COMPRESS_LEVEL))
            f.write(wire + b"\n")
    body = len(b'{"requests":[]}') + total + max(0, count - 1)
    return Job(
        path=path,
        count=count,
        body_bytes=body,
        avg_request_bytes=total / count if count else 0.0,
        avg_compressed_bytes=compressed / count if count else 0.0,
    )


def read_job(path: Path) -> list[dict[str, Any]]:
    """The requests of a JSONL job file, parsed."""
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]
