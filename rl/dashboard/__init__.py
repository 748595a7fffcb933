"""`unigrpo dashboard`: a live, read-only web view of runs (see server.py; docs/dashboard.md)."""
