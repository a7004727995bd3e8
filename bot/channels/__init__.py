"""Transports: Twilio SMS, Telegram, console. Parse, verify, send; no business rules."""
