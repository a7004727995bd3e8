"""Whether a text to a client must be in neutral words: the one decision every message asks.

A client who said it is not safe to text them (a shared or watched phone) is in discreet
mode, and so is the client of a case marked discreet (repo.create_case marks the client
too). Such a client never reads the kind of problem, the other side, violence, a court or
their own words: the intake, its summary, confirmations, reminders, status notices,
check-ins and broadcasts all ask this function, on every channel.
"""

from __future__ import annotations

from storage.models import Case, Client


def is_discreet(client: Client, case: Case | None = None) -> bool:
    """True when what is sent to ``client`` (about ``case``, if any) must use neutral words."""
    return bool(client.discreet or (case is not None and case.discreet))


__all__ = ["is_discreet"]
