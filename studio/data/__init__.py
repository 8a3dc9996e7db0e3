"""Dataset ingest: images, captions, reports, aspect buckets and the built-in demo dataset."""
