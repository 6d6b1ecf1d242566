"""The client-facing APIs: one small module per route, the dialects, and the one pipeline."""
