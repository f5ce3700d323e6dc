"""The runtime: ingest, the in-process pipeline, listeners' start-up and the stages."""
