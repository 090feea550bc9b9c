"""Commands over a finished scan: stored.py (a scan read back), rematch.py, rescan.py, clean.py. Import the
module you need: nothing is re-exported."""
