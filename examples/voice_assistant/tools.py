"""Tools of the example voice assistant: a weather report and a salon booking.

Both are deterministic fakes (no network, no clock, no randomness), so a scripted call gets the
same answer every time. Each returns a JSON-serialisable mapping the tool runtime hands to the
model as the function call's output.
"""

from __future__ import annotations

import hashlib
from datetime import date as Date, time as Time
from typing import Final

#: Opening hours of the salon, and the length of each service in minutes.
OPENS: Final = Time(9, 0)
CLOSES: Final = Time(18, 0)
SERVICES: Final = {"haircut": 30, "colour": 90, "beard trim": 15, "manicure": 45}

_KNOWN_WEATHER: Final = {
    "lisbon": ("sunny", 24, 12),
    "paris": ("light rain", 14, 18),
    "london": ("overcast", 12, 22),
    "new york": ("clear", 19, 10),
    "tokyo": ("humid and cloudy", 27, 8),
}
_CONDITIONS: Final = ("sunny", "partly cloudy", "overcast", "light rain", "windy", "clear")


def get_weather(city: str) -> dict[str, str | int]:
    """Get today's weather for a city.

    Args:
        city: Name of the city, e.g. "Lisbon".

    Returns:
        The city, conditions, temperature in degrees Celsius and wind speed in km/h.

    Raises:
        ValueError: When the city name is empty.
    """
    name = " ".join(city.split())
    if not name:
        raise ValueError("city must not be empty")
    known = _KNOWN_WEATHER.get(name.lower())
    if known is None:
        # A stable digest, not hash(): Python salts string hashes per process.
        seed = hashlib.sha256(name.lower().encode()).digest()
        known = (_CONDITIONS[seed[0] % len(_CONDITIONS)], 5 + seed[1] % 25, seed[2] % 40)
    conditions, temperature, wind = known
    return {"city": name.title(), "conditions": conditions, "temperature_c": temperature,
            "wind_kph": wind}


def book_appointment(date: str, time: str, service: str) -> dict[str, str | int]:
    """Book a salon appointment.

    Args:
        date: Day of the appointment as YYYY-MM-DD.
        time: Start time as HH:MM (24-hour clock).
        service: One of haircut, colour, beard trim or manicure.

    Returns:
        ``status`` "booked" with the confirmation code, or "unavailable" with the reason
        (closed on Sundays, outside opening hours, or an unknown service).

    Raises:
        ValueError: When the date or time is not in the format described.
    """
    try:
        day = Date.fromisoformat(date)
        start = Time.fromisoformat(time)
    except ValueError:
        raise ValueError("date must be YYYY-MM-DD and time HH:MM") from None
    kind = " ".join(service.lower().split())
    base = {"date": day.isoformat(), "time": start.strftime("%H:%M"), "service": kind}
    minutes = SERVICES.get(kind)
    if minutes is None:
        return {**base, "status": "unavailable",
                "reason": "we offer " + ", ".join(SERVICES)}
    if day.weekday() == 6:
        return {**base, "status": "unavailable", "reason": "the salon is closed on Sundays"}
    end_minute = start.hour * 60 + start.minute + minutes
    if start < OPENS or end_minute > CLOSES.hour * 60 + CLOSES.minute:
        return {**base, "status": "unavailable",
                "reason": f"appointments run from {OPENS:%H:%M} to {CLOSES:%H:%M}"}
    digest = hashlib.sha256(f"{base['date']}|{base['time']}|{kind}".encode()).hexdigest()
    return {**base, "status": "booked", "duration_min": minutes,
            "confirmation": "APT-" + digest[:6].upper()}
