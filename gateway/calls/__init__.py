"""Calls: admission, routing and the per-call conversation between a SIP leg and an agent."""
