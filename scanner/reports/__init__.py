"""Report files: outcomes, matches, summary and manifest, written atomically and privately."""
