"""State the fake services share: registry, fault rules, counters, switches, clock."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from workers.sandbox.counters import Counters
from workers.sandbox.faults import PROVIDERS, FaultBook
from workers.sandbox.http_server import ConnectionPolicy
from workers.sandbox.registry import AppRegistry


class Clock:
    """Wall clock with an adjustable offset, so tests can age tokens without waiting."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s


@dataclass
class Behaviour:
    """Switches for checks whose real behaviour is lenient or not documented."""

    # Tokens with the built-in suffix or substring markers get fixed errors (see docs/sandbox.md).
    markers: bool = True
    # Reject a provider token change on one connection less than 20 minutes after the last
    # one with 429 TooManyProviderTokenUpdates; Apple documents it, real APNs seems lenient.
    strict_token_updates: bool = False
    # Reject apns-push-type background with a priority other than 5 (400 BadPriority).
    background_priority_check: bool = True
    # Accepted APNs device token lengths in hex characters; 160 is a Live Activity token.
    apns_token_lengths: tuple[int, ...] = (64,)

    def as_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["apns_token_lengths"] = list(self.apns_token_lengths)
        return values


def _default_policies() -> dict[str, ConnectionPolicy]:
    # APNs allows one stream until a valid provider token was accepted, then about 1000;
    # FCM was observed to allow 100 streams per connection.
    return {
        "apns": ConnectionPolicy(max_concurrent_streams=1000, initial_max_concurrent_streams=1),
        "fcm": ConnectionPolicy(max_concurrent_streams=100),
        "hms": ConnectionPolicy(max_concurrent_streams=100),
    }


@dataclass
class SandboxState:
    """Shared mutable state; the admin endpoint changes it while the services read it."""

    registry: AppRegistry = field(default_factory=AppRegistry)
    faults: FaultBook = field(default_factory=FaultBook)
    counters: Counters = field(default_factory=Counters)
    behaviour: Behaviour = field(default_factory=Behaviour)
    clock: Clock = field(default_factory=Clock)
    policies: dict[str, ConnectionPolicy] = field(default_factory=_default_policies)

    def reset_policies(self) -> None:
        defaults = _default_policies()
        for provider in PROVIDERS:
            policy = self.policies[provider]
            default = defaults[provider]
            policy.max_concurrent_streams = default.max_concurrent_streams
            policy.goaway_after_streams = default.goaway_after_streams
