"""One Stream per connection: the state machine, the run stream's consumer, the socket transport.

stream.py is the machine every connection runs (and its delivery Policy: push,
poll, hybrid from settings.REALTIME_MODE); run.py serves /ws/runs/<run_id>/
(RunConsumer owning a RunStream); socket.py is the transport both endpoints
share; unrouted.py answers every other path. The run list's consumer is
realtime.runlist.user_stream.
"""
