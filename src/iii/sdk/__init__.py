"""The Python SDK: workers that serve functions, call them, and stream through channels."""
