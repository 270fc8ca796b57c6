"""SIP user agent: the only package that touches pjsua2 (through :mod:`gateway.sip._pj`)."""
