"""The run list, /ws/runs/: user_stream.py the socket and its ListStream, list_feed.py what a
change publishes, list_poller.py the process's re-read of every list socket."""
