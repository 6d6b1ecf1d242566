"""The HTTP frame around the pipeline: browser guard, request-head bounds, disconnects,
graceful shutdown, and header values a client can be sent."""
