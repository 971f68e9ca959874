"""``daphne`` on uvloop: the web command's Daphne process (server/daphne_process.py), on uvloop's event loop.

Daphne runs Twisted's asyncio reactor on a loop it creates when
``daphne.server`` is imported, so the loop policy is set here first. The web
command (server/web_command.py) starts each Daphne process this way; the measured
difference is in docs/benchmarks.md. Same arguments as ``daphne``.
"""

from __future__ import annotations

import asyncio


def main() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from server import daphne_process

    daphne_process.main()


if __name__ == "__main__":
    main()
