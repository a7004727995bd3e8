"""The baseline: a bare aiohttp server answering /twilio/sms with the same empty TwiML."""

from __future__ import annotations

import sys

from aiohttp import web

from bot.channels.twilio import EMPTY_TWIML


async def _sms(request: web.Request) -> web.Response:
    await request.post()  # read the form like the real handler must
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_post("/twilio/sms", _sms)
    app.router.add_get("/healthz", _health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
