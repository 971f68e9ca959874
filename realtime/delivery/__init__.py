"""How committed events reach sockets: the process's registries behind one front door.

front_door.py is the only way a stream enters or leaves them: hub.py (one layer
subscription per run per process), poller.py (one log read per tick for every
polled stream), failover.py (the layer probe: push → poll and back),
access_watch.py (credentials re-checked, 4401), per_loop.py (one instance per
event loop, ticking while needed). They call back the stream's on_event,
on_deleted, on_layer_down, on_layer_up and on_revoked (realtime.sockets.stream).
"""
