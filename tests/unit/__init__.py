"""Unit tests: in-process, no server process and no external service."""
