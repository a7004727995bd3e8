"""Entry points that glue channels to conversations: HTTP routes, staff and CLI commands."""
