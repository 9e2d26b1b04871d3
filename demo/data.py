"""Demo data from a fixed seed: users, their devices and the mess of real registrations.

About 60% of devices are APNs (both environments), 35% FCM and 5% HMS, with real token
formats. Some tokens come with spaces, angle brackets or upper case, as old iOS SDKs
printed them. Some tokens are first registered for another activation and then move.
About 2% are tokens that the sandbox rejects as unregistered or bad, and some activations
are inactive.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

SIZES = {"small": 2_000, "default": 100_000, "1m": 666_667}

# Device count per user: mean 1.5 devices, so 100,000 users have about 150,000 devices.
DEVICES_PER_USER = ((1, 0.6), (2, 0.3), (3, 0.1))

INVALID_SHARE = 0.02
MESSY_SHARE = 0.03
MOVED_SHARE = 0.01
INACTIVE_SHARE = 0.05

# Token endings that the sandbox rejects with fixed errors (its built-in markers).
APNS_UNREGISTERED = "0000dead"
APNS_BAD = "00000bad"
FCM_UNREGISTERED = ":unregistered"
HMS_INVALID = "-invalid"

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """One installation: what is registered and how the sandbox will respond."""

    user_id: str
    activation_id: str
    platform: str
    token: str
    registered_token: str
    environment: str | None
    active: bool
    invalid: bool
    moved_from: str | None


def generate(users: int, seed: int = 20261204) -> list[DemoDevice]:
    """Generate the devices of `users` users, the same list for the same seed."""
    rng = random.Random(seed)
    devices = []
    for number in range(users):
        user_id = f"{number:08d}"
        count = rng.choices([n for n, _ in DEVICES_PER_USER], [w for _, w in DEVICES_PER_USER])[0]
        for index in range(count):
            devices.append(new_device(rng, user_id, f"{user_id}-{index}"))
    return devices


def new_device(rng: random.Random, user_id: str, serial: str) -> DemoDevice:
    platform = rng.choices(["apns", "fcm", "hms"], [0.60, 0.35, 0.05])[0]
    invalid = rng.random() < INVALID_SHARE
    token = make_token(rng, platform, invalid)
    environment = None
    if platform == "apns":
        environment = rng.choice(["production", "production", "development"])
    registered = messy(rng, token) if platform == "apns" and rng.random() < MESSY_SHARE else token
    moved_from = f"moved-{serial}" if rng.random() < MOVED_SHARE else None
    return DemoDevice(
        user_id=user_id,
        activation_id=activation_id(rng),
        platform=platform,
        token=token,
        registered_token=registered,
        environment=environment,
        active=rng.random() >= INACTIVE_SHARE,
        invalid=invalid,
        moved_from=moved_from,
    )


def make_token(rng: random.Random, platform: str, invalid: bool) -> str:
    if platform == "apns":
        token = f"{rng.getrandbits(256):064x}"
        if invalid:
            ending = rng.choice([APNS_UNREGISTERED, APNS_BAD])
            token = token[: -len(ending)] + ending
        return token
    if platform == "fcm":
        # Instance id, a colon, then the registration token starting with APA91b.
        instance = "".join(rng.choices(TOKEN_ALPHABET, k=22))
        registration = "APA91b" + "".join(rng.choices(TOKEN_ALPHABET, k=134))
        return f"{instance}:{registration}" + (FCM_UNREGISTERED if invalid else "")
    token = "".join(rng.choices(string.ascii_letters + string.digits, k=130))
    return token + (HMS_INVALID if invalid else "")


def messy(rng: random.Random, token: str) -> str:
    """Write an APNs token the way old SDKs printed it: <abcd1234 ...>, perhaps upper case."""
    groups = " ".join(token[i : i + 8] for i in range(0, len(token), 8))
    text = f"<{groups}>"
    return text.upper() if rng.random() < 0.5 else text


def activation_id(rng: random.Random) -> str:
    """Return a PowerAuth activation id: a UUID in its 36-character text form."""
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
