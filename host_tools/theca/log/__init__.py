"""Telemetry logs: the .tlog file, records decoded from its frames, and one writer per output format."""
