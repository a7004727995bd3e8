"""Channel-neutral dialogues: intake, status, reminders' replies, check-ins, attorney relay."""
