"""A voice assistant that tells the weather and books salon appointments."""
