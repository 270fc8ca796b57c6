"""The native media port's G.711 encoder (``gateway/sip/gwmedia.c``) against the reference.

The port encodes the caller's audio in C when the agent speaks ``audio/pcmu``/``audio/pcma``
(the exchange itself is exercised end to end by ``test_gateway_calls.py``, whose appends must
be the samples SIPp sent). Here every one of the 65,536 PCM16 values goes through the C
tables and must give the code of :mod:`gateway.media.g711`'s ITU-T G.711 tables. The library
is built by ``scripts/build-pjsua2.sh`` with the source build, the default binding; the PyPI
wheel has none (the wheel's CI tier runs only ``sip and smoke`` tests).
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.media import g711
from gateway.sip import native

pytestmark = pytest.mark.sip

ALL_SAMPLES = np.arange(65536, dtype=np.uint32).astype(np.uint16).astype("<u2").tobytes()


@pytest.fixture(scope="module")
def media() -> native.NativeMedia:
    lib, why = native.load("native")
    assert lib is not None, why
    return lib


@pytest.mark.parametrize(("codec", "reference"), [("PCMU", g711.ulaw_encode),
                                                 ("PCMA", g711.alaw_encode)])
def test_every_sample_encodes_as_the_reference_tables(media: native.NativeMedia, codec: str,
                                                      reference: object) -> None:
    assert callable(reference)
    got = media.g711_encode(codec, ALL_SAMPLES)
    want = reference(ALL_SAMPLES)
    assert len(got) == 65536
    mismatches = [i for i in range(65536) if got[i] != want[i]]
    assert mismatches == []


def test_the_encoder_refuses_a_codec_it_does_not_know(media: native.NativeMedia) -> None:
    assert media.lib.gw_g711_encode(0, b"\x00\x00", 2, bytes(1)) == 0
