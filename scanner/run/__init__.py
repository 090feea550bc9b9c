"""One run's lifecycle: --out through the mirror, the report-directory lock, the checkpoint, prepare and
finish (merge, summary, manifest), the progress bar. Import the module you need: nothing is re-exported."""
