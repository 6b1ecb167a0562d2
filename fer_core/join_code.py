"""Join codes of online classes: short, typed by hand, and too many to guess.

A code is 10 characters from a 31-letter alphabet without look-alikes (no 0/O, 1/I/L):
31**10 is about 2**49.5, so guessing one open class among a thousand takes
about 2**40 tries. Shown in groups of four ("K7QM-4RZT-9X"); typed in any case, with or without
the dashes and spaces.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10
GROUP = 4
_SEPARATORS = re.compile(r"[\s\-_.]+")


class JoinCodeError(ValueError):
    """What was typed cannot be a join code; the message says why in plain words."""


def new_code() -> str:
    """A fresh random code in canonical form (upper case, no separators)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise(text: str) -> str:
    """Canonical form of a typed or linked code; raises JoinCodeError for anything that cannot be one."""
    code = _SEPARATORS.sub("", str(text or "")).upper()
    if not code:
        raise JoinCodeError("Enter the join code your instructor gave you.")
    if len(code) > 3 * CODE_LENGTH:
        raise JoinCodeError("That is not a join code: it is far too long.")
    bad = sorted({ch for ch in code if ch not in ALPHABET})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad[:5])
        hint = " (codes never contain 0, O, 1, I or L)" if set(bad) & set("0O1IL") else ""
        raise JoinCodeError(f"That is not a join code: it contains {shown}{hint}.")
    if len(code) != CODE_LENGTH:
        raise JoinCodeError(f"A join code has {CODE_LENGTH} characters; this one has {len(code)}.")
    return code


def display(code: str) -> str:
    """"K7QM4RZT9X" -> "K7QM-4RZT-9X"."""
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))


def entropy_bits() -> float:
    import math

    return CODE_LENGTH * math.log2(len(ALPHABET))
