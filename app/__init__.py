"""Processes built from the core: the command line, the Streamlit UI and the daily worker."""
