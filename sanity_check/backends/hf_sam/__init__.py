"""Segment Anything on transformers' implementation (imported on first use: it needs transformers)."""
