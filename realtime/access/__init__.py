"""Who may watch what: the WebSocket handshake's authentication and connection tickets."""
