"""Interpreter latency A/B of .tflite files (filled in by the export work)."""
