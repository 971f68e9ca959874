"""A frame's format and what a client may send: frames, client frames, close codes, query parameters."""
