"""Identifiers: UUIDv7 for events (time-ordered), random tokens for keys."""

import os
import random
import secrets
import time

# Identifiers need uniqueness, not secrecy: a generator seeded from the OS, not a syscall per id.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))
_MS_MASK = (1 << 48) - 1
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_B_MASK = (1 << 62) - 1


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(74)  # 12 bits of rand_a, 62 of rand_b
    value = (ms & _MS_MASK) << 80 | _VERSION | (rand >> 62) << 64 | _VARIANT | rand & _RAND_B_MASK
    h = value.to_bytes(16, "big").hex()  # by hand: uuid.UUID, or even f"{value:032x}", costs more
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"
