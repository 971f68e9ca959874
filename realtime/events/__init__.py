"""The event log's writer and the publisher (the only module that sends to the channel layer)."""
