"""Local Realtime API simulator: a GA-shaped fake of the OpenAI Realtime API for tests and demos.

``core`` (with ``responses``, ``conversation``, ``validate``, ``vad``, ``audio`` and
``scenario``) is the pure session state machine; ``tts`` synthesises speech; ``server`` is the
aiohttp adapter (``SimulatorServer``, ``serve``, options in ``options``). Realtime Calls, the
OpenAI side of SIP calls, are ``calls`` (pure state machine and REST rules), ``playout``
(pure: the agent audio a caller hears), ``signing`` (pure: Standard Webhooks signatures),
``webhooks`` (delivery), ``simcall`` (one call) and ``calldesk`` (REST, sidebands, test
control). This package file imports nothing, so the pure modules stay importable without
aiohttp. See docs/simulator.md.
"""
