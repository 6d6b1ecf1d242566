"""The status page (DESIGN §13): one snapshot, the page, its events and its admin session."""
