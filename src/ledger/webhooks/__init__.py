"""Webhooks: subscriptions, the delivery outbox, signing and the dispatcher."""
