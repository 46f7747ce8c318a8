"""Signed webhooks (Standard Webhooks) for job events: endpoints, safety, delivery, retries."""
