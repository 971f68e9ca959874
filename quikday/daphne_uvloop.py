"""``daphne`` on uvloop: Daphne's own command line, with uvloop's event loop under Twisted.

Daphne runs Twisted's asyncio reactor on a loop it creates when
``daphne.server`` is imported, so the loop policy is set here first. The web
command (quikday/web.py) starts each Daphne process this way; the measured
difference is in docs/benchmarks.md. Same arguments as ``daphne``.
"""

from __future__ import annotations

import asyncio


def main() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
