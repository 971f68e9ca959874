"""The streams' HTTP endpoints: the event log, connection tickets, the run list's summaries."""
