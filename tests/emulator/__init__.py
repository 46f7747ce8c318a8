"""Tests of the Message Batches API emulator, through the official SDK."""
