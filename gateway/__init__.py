"""gateway: a SIP telephony gateway that puts OpenAI Realtime voice agents on the phone network."""

__version__ = "0.1.0"
