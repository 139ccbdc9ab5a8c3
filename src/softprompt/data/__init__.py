"""Data readers (local files and hub datasets), and the sentiment files the quickstart trains on."""
