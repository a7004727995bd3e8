"""Casework: the use cases every entry point shares.

Changing a status, assigning a case, booking, moving and cancelling an appointment,
importing a row and erasing a client each live here once. Each checks its input against one
table of limits (``limits``), checks who may act (``base.authorize``), writes one audit row
and queues the client's notice in the caller's transaction, then returns a small result the
caller formats. A refusal is a ``CaseworkError`` whose text is shown as it is by the CLI,
the API and the staff commands alike.
"""
