"""Team features: client keys, who is calling, and one usage record per request."""
