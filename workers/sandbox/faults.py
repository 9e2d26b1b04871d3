"""Fault rules: errors and latency injected into otherwise valid sends.

A rule applies to one provider (`apns`, `fcm` or `hms`), either to one device token or to
all traffic, with a probability drawn from a seeded RNG and optionally for a limited number
of matching requests. Rules are checked after a request passed every protocol check, so an
injected error always comes from a request the real service would have accepted.

Latency adds up over every rule that fires; the outcome comes from the first firing rule
that has one, per-token rules before global rules, each group in the order added.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import asdict, dataclass
from typing import Literal

Provider = Literal["apns", "fcm", "hms"]
PROVIDERS: tuple[Provider, ...] = ("apns", "fcm", "hms")

# Outcomes each provider can inject; the services map them to status codes and bodies.
OUTCOMES: dict[str, frozenset[str]] = {
    "apns": frozenset(
        {
            "unregistered",
            "expired_token",
            "bad_device_token",
            "device_token_not_for_topic",
            "too_many_requests",
            "internal_server_error",
            "service_unavailable",
            "shutdown",
        }
    ),
    "fcm": frozenset(
        {
            "unregistered",
            "invalid_token",
            "sender_id_mismatch",
            "quota_exceeded",
            "unavailable",
            "internal",
            "third_party_auth_error",
        }
    ),
    "hms": frozenset({"invalid_token", "traffic_control", "internal_error", "not_permitted"}),
}


class InvalidFaultRule(ValueError):
    """A fault rule names an unknown provider or outcome, or has out-of-range numbers."""


@dataclass
class FaultRule:
    """One injected behaviour; `outcome` None means latency only."""

    provider: str
    outcome: str | None = None
    token: str | None = None
    probability: float = 1.0
    latency_ms: float = 0.0
    # Retry-After header value: seconds, or verbatim text such as an HTTP date.
    retry_after: str | None = None
    # Send `retry_after` seconds as an HTTP date (now + seconds) instead of a number.
    retry_after_as_date: bool = False
    # Number of matching requests still to affect; None means no limit.
    remaining: int | None = None
    rule_id: int = 0

    def validate(self) -> None:
        if self.provider not in PROVIDERS:
            raise InvalidFaultRule(f"unknown provider {self.provider!r}; use apns, fcm or hms")
        if self.outcome is not None and self.outcome not in OUTCOMES[self.provider]:
            choices = ", ".join(sorted(OUTCOMES[self.provider]))
            raise InvalidFaultRule(
                f"unknown {self.provider} outcome {self.outcome!r}; use one of {choices}"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise InvalidFaultRule(f"probability must be within 0..1, not {self.probability}")
        if self.latency_ms < 0:
            raise InvalidFaultRule(f"latency_ms must not be negative, not {self.latency_ms}")
        if self.retry_after_as_date and not (self.retry_after or "").isdigit():
            raise InvalidFaultRule("retry_after_as_date needs retry_after in whole seconds")
        if self.remaining is not None and self.remaining < 1:
            raise InvalidFaultRule(f"count must be at least 1, not {self.remaining}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class FaultDecision:
    """The result of the fired rules: an outcome (or None) and the total added delay."""

    outcome: str | None
    delay_s: float
    retry_after: str | None
    retry_after_as_date: bool = False


def retry_after_header(decision: FaultDecision, now: float) -> list[tuple[bytes, bytes]]:
    """Return the Retry-After header of a decision, or no header."""
    if decision.retry_after is None:
        return []
    if decision.retry_after_as_date:
        value = email.utils.formatdate(now + int(decision.retry_after), usegmt=True)
        return [(b"retry-after", value.encode())]
    return [(b"retry-after", decision.retry_after.encode())]


class FaultBook:
    """All fault rules, indexed so that a provider without rules costs one lookup."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self._next_id = 1
        self._token_rules: dict[tuple[str, str], list[FaultRule]] = {}
        self._global_rules: dict[str, list[FaultRule]] = {provider: [] for provider in PROVIDERS}
        self._has_token_rules: dict[str, bool] = dict.fromkeys(PROVIDERS, False)

    def add(self, rule: FaultRule) -> FaultRule:
        rule.validate()
        rule.rule_id = self._next_id
        self._next_id += 1
        if rule.token is None:
            self._global_rules[rule.provider].append(rule)
        else:
            self._token_rules.setdefault((rule.provider, rule.token), []).append(rule)
            self._has_token_rules[rule.provider] = True
        return rule

    def remove(self, rule_id: int) -> bool:
        for rules in [*self._global_rules.values(), *self._token_rules.values()]:
            for rule in rules:
                if rule.rule_id == rule_id:
                    rules.remove(rule)
                    self._reindex()
                    return True
        return False

    def clear(self) -> None:
        self._token_rules.clear()
        for rules in self._global_rules.values():
            rules.clear()
        self._reindex()

    def reseed(self, seed: int | None) -> None:
        self.random.seed(seed)

    def rules(self) -> list[FaultRule]:
        every_rule = [rule for rules in self._global_rules.values() for rule in rules]
        every_rule += [rule for rules in self._token_rules.values() for rule in rules]
        return sorted(every_rule, key=lambda rule: rule.rule_id)

    def is_active(self, provider: str) -> bool:
        return bool(self._global_rules[provider]) or self._has_token_rules[provider]

    def decide(self, provider: str, token: str) -> FaultDecision | None:
        """Fire the rules matching `provider` and `token`; None when nothing fired."""
        candidates: list[FaultRule] = []
        if self._has_token_rules[provider]:
            candidates += self._token_rules.get((provider, token), [])
        candidates += self._global_rules[provider]
        if not candidates:
            return None

        outcome: str | None = None
        retry_after: str | None = None
        retry_after_as_date = False
        delay_s = 0.0
        fired = False
        for rule in candidates:
            if rule.probability < 1.0 and self.random.random() >= rule.probability:
                continue
            fired = True
            delay_s += rule.latency_ms / 1000.0
            if outcome is None and rule.outcome is not None:
                outcome = rule.outcome
                retry_after = rule.retry_after
                retry_after_as_date = rule.retry_after_as_date
            self._consume(rule)

        if not fired:
            return None
        return FaultDecision(outcome, delay_s, retry_after, retry_after_as_date)

    def _consume(self, rule: FaultRule) -> None:
        if rule.remaining is None:
            return
        rule.remaining -= 1
        if rule.remaining <= 0:
            self.remove(rule.rule_id)

    def _reindex(self) -> None:
        self._token_rules = {key: rules for key, rules in self._token_rules.items() if rules}
        for provider in PROVIDERS:
            self._has_token_rules[provider] = any(key[0] == provider for key in self._token_rules)
