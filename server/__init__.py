"""FastAPI inference server: /v1/act, micro-batching, hot swap, operator page."""
