"""A local emulator of Anthropic's Message Batches API."""
