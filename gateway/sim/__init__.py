"""Local Realtime API simulator: a GA-shaped fake of the OpenAI Realtime API for tests and demos.

``core`` (with ``responses``, ``conversation``, ``validate``, ``vad``, ``audio`` and
``scenario``) is the pure session state machine; ``tts`` synthesises speech; ``server`` is the
aiohttp adapter (``SimulatorServer``, ``serve``). This package file imports nothing, so the
pure modules stay importable without aiohttp. See docs/simulator.md.
"""
