"""The WebSocket consumers: one class per endpoint, each owning one Stream per connection.

/ws/runs/<run_id>/ is run.RunConsumer, /ws/runs/ is user_stream.RunListConsumer;
the state of either connection is its stream (stream.py), and push, poll and
hybrid are its policy (settings.REALTIME_MODE), not classes. socket.py is the
transport both share; unrouted.py answers every other path.
"""
