"""Counters of accepted and rejected sends, and optional per-device-token accepted counts.

Per-token counting is off unless asked for. When on, each token is kept as its 64-bit
Python string hash mapped to a count: about 80 bytes per distinct token (measured with
tracemalloc), so 1,000,000 tokens take about 80 MB. The hash is salted per process, which
is fine because only this process hashes tokens. The chance that any two of 1,000,000
tokens share a slot is about 3 in 10^8.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    """Accepted sends per provider, rejections per (provider, reason) and per-token counts."""

    def __init__(self, count_tokens: bool = False) -> None:
        self.count_tokens = count_tokens
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.token_counts: dict[str, dict[int, int]] = {"apns": {}, "fcm": {}, "hms": {}}

    def accept(self, provider: str, token: str) -> None:
        self.accepted[provider] += 1
        if self.count_tokens:
            counts = self.token_counts[provider]
            key = hash(token)
            counts[key] = counts.get(key, 0) + 1

    def reject(self, provider: str, reason: str) -> None:
        self.rejected[(provider, reason)] += 1

    def reset(self) -> None:
        self.accepted.clear()
        self.rejected.clear()
        for counts in self.token_counts.values():
            counts.clear()

    def lookup(self, provider: str, tokens: list[str]) -> dict[str, int]:
        """Return the accepted count of each token in `tokens` (0 for unseen tokens)."""
        counts = self.token_counts[provider]
        return {token: counts.get(hash(token), 0) for token in tokens}

    def snapshot(self) -> dict[str, object]:
        rejected: dict[str, dict[str, int]] = {}
        for (provider, reason), count in sorted(self.rejected.items()):
            rejected.setdefault(provider, {})[reason] = count
        tokens: dict[str, dict[str, int]] = {}
        for provider, counts in self.token_counts.items():
            tokens[provider] = {
                "distinct": len(counts),
                "accepted_more_than_once": sum(1 for count in counts.values() if count > 1),
            }
        return {
            "accepted": {
                provider: self.accepted.get(provider, 0) for provider in self.token_counts
            },
            "rejected": rejected,
            "count_tokens": self.count_tokens,
            "tokens": tokens,
        }
