"""The Kamailio front: the one SIP address in front of N pjsua2 workers.

``spec`` (what the front needs, frozen and validated), ``render`` and ``routing`` (the
Kamailio files), ``state`` (dispatcher and registration state, JSON-RPC framing) and
``errors`` are pure; ``kamailio`` is the adapter that writes the run directory, checks,
starts, controls and stops the process, with ``ports`` telling who holds a listen address.
See docs/front.md.
"""
