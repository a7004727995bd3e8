"""Appointment row transitions for the casework use cases: moved, cancelled."""

from __future__ import annotations

from datetime import datetime

from storage.models import Appointment

APPOINTMENT_CANCELLED = "cancelled"


def move_appointment(appt: Appointment, *, starts_at: datetime, at: datetime) -> None:
    """A new start; the client's earlier confirmation or refusal was about the old one."""
    appt.starts_at = starts_at
    appt.confirmed_at = None
    appt.declined_at = None
    appt.updated_at = at


def cancel_appointment(appt: Appointment, *, at: datetime) -> None:
    """Marks the appointment cancelled (its reminders are withdrawn by the caller)."""
    appt.status = APPOINTMENT_CANCELLED
    appt.updated_at = at
