"""Ingestion pipeline: discover -> fetch -> decode -> store -> embed -> upsert."""
