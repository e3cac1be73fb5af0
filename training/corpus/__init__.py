"""Build the processed corpus and its fixed splits from pinned raw sources."""
