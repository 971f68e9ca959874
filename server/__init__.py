"""The processes' runtime: the web command, its Daphne processes and their tuning, the worker's kombu patch.

It knows Daphne, Twisted and kombu, never the project's apps: quikday.asgi and
quikday.celery (the configuration) wire it to them.
"""
