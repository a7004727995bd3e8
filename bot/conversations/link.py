"""Connecting a chat account to the client who already texts us, by the number they share.

A new chat client is offered a button that shares their own phone number; a number the
platform vouches is theirs links this chat to the SMS client with that number. Only the
sender's own number links: a contact card of someone else would hand over their case.
"""

from __future__ import annotations

from bot.conversations.base import Turn
from bot.core import Reply
from bot.i18n import gettext
from bot.phones import PhoneError, normalize_phone
from storage import repo
from storage.models import Channel

COMMAND = "link"  # /link asks for the button again


def _button(lang: str) -> str:
    return gettext(lang, "Share my phone number")


def offer(lang: str) -> Reply:
    """The first answer to a new chat client: the button that links them to an SMS client."""
    return Reply(
        gettext(
            lang,
            "Have you already texted us from your phone? Tap “{button}” below to connect "
            "this chat to your case. Otherwise, let's begin.",
            button=_button(lang),
        ),
        urgent=True,
        ask_phone=_button(lang),
    )


def _phone(raw: str) -> str | None:
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not digits:
        return None
    try:
        # Telegram sends the number without its "+" but always with the country code.
        return normalize_phone("+" + digits)
    except PhoneError:
        return None


async def _refuse(turn: Turn, reason: str, text: str, *, again: bool) -> None:
    await repo.audit(
        turn.session,
        actor_kind="client",
        action="identity.link",
        client_id=turn.client.id,
        allowed=False,
        detail=reason,
    )
    turn.replies.append(Reply(text, urgent=True, ask_phone=_button(turn.lang) if again else None))


async def respond(turn: Turn) -> None:
    """Links this chat to the client with the shared number, when the number is the sender's.

    After a link, ``turn.client`` is the client this chat now belongs to: the answer goes
    to them.
    """
    lang = turn.lang
    contact = turn.message.contact
    if contact is None:
        text = gettext(
            lang, "Tap “{button}” below to connect this chat to your case.", button=_button(lang)
        )
        turn.replies.append(Reply(text, urgent=True, ask_phone=_button(lang)))
        return
    if not contact.own:
        text = gettext(
            lang,
            "I can only connect your own phone number. Please tap “{button}” below "
            "instead of sending a contact.",
            button=_button(lang),
        )
        await _refuse(turn, "contact of someone else", text, again=True)
        return
    session, services = turn.session, turn.services
    phone = _phone(contact.phone)
    owner = (
        await repo.find_client_by_address(
            session, vault=services.vault, channel=Channel.SMS, address=phone
        )
        if phone
        else None
    )
    if owner is None or owner.wrapped_key is None:
        text = gettext(
            lang, "We have no case for this phone number. Just write here and we will help you."
        )
        await _refuse(turn, "no client with that number", text, again=False)
        return
    if owner.id == turn.client.id:
        text = gettext(lang, "This chat is already connected to your case.")
        turn.replies.append(Reply(text, urgent=True, clear_buttons=True))
        return
    assert turn.client.id is not None
    if await repo.open_cases(session, client_id=turn.client.id):
        text = gettext(
            lang, "This chat already has its own case. A coordinator will connect the two."
        )
        await _refuse(turn, "this Telegram account has its own case", text, again=False)
        return
    await repo.relink_identity(session, vault=services.vault, identity=turn.identity, client=owner)
    await repo.audit(
        session,
        actor_kind="client",
        action="identity.link",
        client_id=owner.id,
        detail=f"telegram linked (was client {turn.client.id})",
    )
    turn.client = owner
    text = gettext(
        owner.language,
        "Done: this chat is now connected to your case. You can write here or by text "
        "message, whichever is easier.",
    )
    turn.replies.append(Reply(text, urgent=True, clear_buttons=True))
