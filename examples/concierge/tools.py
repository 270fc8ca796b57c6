"""Tools of the example concierge: read a trade quote, check it, compare, order, schedule.

Deterministic fakes: a fixed price guide and vendor list, and order and visit numbers derived
from the arguments, so a scripted call gets the same numbers every time. Each returns a
JSON-serialisable mapping for the model; malformed input raises ``ValueError`` (the tool runtime
reports it to the model as an error).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date as Date, time as Time
from typing import Final

#: Typical price range per service, in US dollars.
PRICE_GUIDE: Final = {
    "boiler service": (300.0, 550.0),
    "leak repair": (150.0, 400.0),
    "rewiring": (2000.0, 5000.0),
    "window cleaning": (80.0, 200.0),
}
#: Vendors the concierge may order from.
APPROVED_VENDORS: Final = frozenset({"acme plumbing", "bolt heating", "spark electric"})
#: Visit windows the scheduling desk offers, by start hour.
VISIT_WINDOWS: Final = {8: "08:00-10:00", 10: "10:00-12:00", 13: "13:00-15:00",
                        15: "15:00-17:00"}

_CURRENCIES: Final = {"usd": "USD", "dollars": "USD", "dollar": "USD", "$": "USD",
                      "eur": "EUR", "euros": "EUR", "euro": "EUR", "€": "EUR",
                      "gbp": "GBP", "pounds": "GBP", "pound": "GBP", "£": "GBP"}
_AMOUNT: Final = re.compile(
    r"(?P<pre>[$€£])?\s*(?P<amount>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d{1,7}(?:[.,]\d{1,2})?)\s*"
    r"(?P<post>usd|dollars?|eur|euros?|gbp|pounds?)?", re.IGNORECASE)
_VENDOR: Final = re.compile(r"^\s*(?P<vendor>.+?)\s*(?::|\bquotes?\b|\bquoted\b|\boffers?\b)",
                            re.IGNORECASE)
_SERVICE: Final = re.compile(r"\bfor\s+(?:an?\s+|the\s+)?(?P<service>[a-z][a-z -]*[a-z])",
                             re.IGNORECASE)
_ORDER_ID: Final = re.compile(r"ORD-[0-9A-F]{6}")


def _code(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}-{digest[:6].upper()}"


def _amount(text: str) -> float:
    # "2,500" and "2,500.50" group thousands; "12,50" is a decimal comma.
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?", text):
        return _tidy(float(text.replace(",", "")))
    return _tidy(float(text.replace(",", ".")))


def _tidy(value: float) -> float:
    # Whole amounts as integers, so the agent says "450", not "450.0".
    return int(value) if float(value).is_integer() else round(value, 2)


def _words(text: str) -> str:
    return " ".join(text.lower().split())


def extract_quote(text: str) -> dict[str, str | float | bool]:
    """Read the vendor, price and service out of a quote the caller reads or pastes.

    Args:
        text: The quote, e.g. "Acme Plumbing: 450 USD for boiler service".

    Returns:
        ``found`` true with vendor, amount, currency (ISO code) and service; or ``found`` false
        with the reason when there is no price in the text.
    """
    match = next((m for m in _AMOUNT.finditer(text) if m.group("pre") or m.group("post")),
                 None) or _AMOUNT.search(text)
    if match is None:
        return {"found": False, "reason": "no price in the text"}
    symbol = (match.group("pre") or match.group("post") or "usd").lower()
    vendor = _VENDOR.search(text)
    service = _SERVICE.search(text)
    return {
        "found": True,
        "vendor": vendor.group("vendor").strip() if vendor else "unknown vendor",
        "amount": _amount(match.group("amount")),
        "currency": _CURRENCIES.get(symbol, "USD"),
        "service": _words(service.group("service")) if service else "unspecified",
    }


def validate_quote(vendor: str, amount: float, service: str) -> dict[str, str | bool | float]:
    """Check a quote against the price guide and the approved vendor list.

    Args:
        vendor: Who made the quote, e.g. "Acme Plumbing".
        amount: The price in US dollars.
        service: What the quote is for, e.g. "boiler service".

    Returns:
        ``valid`` (approved vendor, known service and a positive price), ``verdict`` ("fair",
        "above the guide", "below the guide" or "unknown service") and the guide's range.
    """
    kind = _words(service)
    approved = _words(vendor) in APPROVED_VENDORS
    guide = PRICE_GUIDE.get(kind)
    if guide is None:
        return {"valid": False, "approved_vendor": approved, "verdict": "unknown service"}
    low, high = guide
    verdict = "fair" if low <= amount <= high else \
        "above the guide" if amount > high else "below the guide"
    return {"valid": approved and amount > 0, "approved_vendor": approved, "verdict": verdict,
            "guide_low": _tidy(low), "guide_high": _tidy(high)}


def compare_quotes(quotes: list[str]) -> dict[str, object]:
    """Find the cheapest of several quotes for the same service.

    Args:
        quotes: The quotes as text, one per vendor, e.g. "Bolt Heating: 520 USD for boiler
            service".

    Returns:
        The number of quotes read, the ``best`` one (vendor, amount, currency, service) and
        ``savings`` against the most expensive one.

    Raises:
        ValueError: When no quote has a price, or the prices are in different currencies.
    """
    read = [q for q in (extract_quote(text) for text in quotes) if q["found"]]
    if not read:
        raise ValueError("none of the quotes has a price")
    if len({q["currency"] for q in read}) > 1:
        raise ValueError("the quotes are in different currencies")
    ranked = sorted(read, key=lambda q: (float(q["amount"]), str(q["vendor"])))
    best, worst = ranked[0], ranked[-1]
    return {
        "count": len(read),
        "best": {k: best[k] for k in ("vendor", "amount", "currency", "service")},
        "savings": _tidy(float(worst["amount"]) - float(best["amount"])),
    }


def place_order(vendor: str, service: str, amount: float) -> dict[str, str | float]:
    """Order a service from an approved vendor at the quoted price.

    Args:
        vendor: The vendor, e.g. "Acme Plumbing".
        service: The service, e.g. "boiler service".
        amount: The agreed price in US dollars.

    Returns:
        ``status`` "placed" with the ``order_id`` (for scheduling), or "refused" with the
        reason when the vendor is not approved.

    Raises:
        ValueError: When the amount is not positive.
    """
    if amount <= 0:
        raise ValueError("amount must be more than 0")
    name, kind = _words(vendor), _words(service)
    if name not in APPROVED_VENDORS:
        return {"status": "refused", "reason": f"{vendor} is not an approved vendor"}
    return {"status": "placed", "order_id": _code("ORD", name, kind, f"{amount:.2f}"),
            "vendor": vendor, "service": kind, "amount": _tidy(amount)}


def schedule_appointment(order_id: str, date: str, time: str) -> dict[str, str]:
    """Book the vendor's visit for an order.

    Args:
        order_id: The order to schedule, e.g. "ORD-1A2B3C".
        date: Day of the visit as YYYY-MM-DD.
        time: Preferred start as HH:MM; the visit gets the two-hour window starting at or
            before it.

    Returns:
        ``status`` "scheduled" with the window and a ``confirmation`` code, or "unavailable"
        with the reason (no visits on weekends or outside 08:00-17:00).

    Raises:
        ValueError: When the order id, date or time is malformed.
    """
    if not _ORDER_ID.fullmatch(order_id):
        raise ValueError("order_id must look like ORD-1A2B3C")
    try:
        day = Date.fromisoformat(date)
        start = Time.fromisoformat(time)
    except ValueError:
        raise ValueError("date must be YYYY-MM-DD and time HH:MM") from None
    base = {"order_id": order_id, "date": day.isoformat(), "time": start.strftime("%H:%M")}
    if day.weekday() >= 5:
        return {**base, "status": "unavailable", "reason": "no visits at weekends"}
    hours = [h for h in VISIT_WINDOWS if h <= start.hour]
    if not hours or start.hour >= 17:
        return {**base, "status": "unavailable", "reason": "visits run from 08:00 to 17:00"}
    window = VISIT_WINDOWS[hours[-1]]
    return {**base, "status": "scheduled", "window": window,
            "confirmation": _code("VIS", order_id, base["date"], window)}
