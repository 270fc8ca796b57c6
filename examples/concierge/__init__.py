"""A concierge that reads trade quotes, compares them, orders and schedules the visit."""
