"""The container's HEALTHCHECK: ``GET /healthz`` on the control HTTP server the config names.

It reads the same configuration as ``gateway run`` (``$GATEWAY_CONFIG``, in the image
``/etc/gateway/gateway.yaml``), so a changed ``control.port`` needs no second setting. A
wildcard ``control.host`` is reached on loopback, which works with host networking and with
published ports alike (the check runs inside the container). Exit status 0 is healthy, 1 is
not (the reason goes to the health log, ``docker inspect``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from gateway.config import load_settings
from gateway.errors import ConfigErrors

#: Seconds for the whole request; the image's HEALTHCHECK allows 10.
TIMEOUT_S = 5.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def healthz_url(host: str, port: int) -> str:
    """The ``/healthz`` URL of a control server bound to ``host:port``."""
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def main() -> int:
    """Probe ``/healthz`` once; 0 when it answers 200."""
    try:
        settings = load_settings(None, os.environ)
    except ConfigErrors as exc:
        print(f"unhealthy: configuration: {exc}", file=sys.stderr)
        return 1
    control = settings.control
    if control.port == 0:
        print("unhealthy: control.port is 0 (any free port): give it a fixed port",
              file=sys.stderr)
        return 1
    url = healthz_url(control.host, control.port)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    print(f"healthy: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
