"""Measuring models: parameter and MAC counts, file sizes, interpreter latency A/B."""
