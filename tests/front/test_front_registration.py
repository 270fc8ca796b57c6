"""Registration mode: the front registers the gateway's extension at a PBX (a second Kamailio
with digest auth) with its own address as Contact, and the PBX's calls reach a worker."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from gateway.front.spec import Registration
from tests.conftest import scaled
from tests.front.conftest import front_address, front_spec, running_front
from tests.support.frontsip import Dialog, FakeWorker, SipEndpoint
from tests.support.kamailio import TEST_PASSWORD, Kamailio

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]


async def test_the_front_registers_once_and_the_pbx_calls_reach_a_worker(
        tmp_path: Path, run_dir: Path) -> None:
    pbx = Kamailio(tmp_path / "pbx", auth=True)
    await asyncio.to_thread(pbx.start)
    try:
        with FakeWorker("w1") as w1, FakeWorker("w2") as w2:
            registration = Registration(
                name="pbx", registrar=pbx.uri, user="gw", domain=pbx.host, auth_user="gw",
                password=TEST_PASSWORD, realm=pbx.realm, expires_s=60,
                allow_from=(ipaddress.ip_network("127.0.0.1/32"),))
            # No trunk allow-list: only the PBX may call, and only the registered extension.
            spec = front_spec([w1, w2], run_dir, trunk_allow=(), registrations=(registration,),
                              reg_timer_interval_s=5)
            assert TEST_PASSWORD not in repr(spec)
            host, port = front_address(spec)
            async with running_front(spec) as front:
                (contact,) = await asyncio.to_thread(pbx.wait_registered, "gw", scaled(10))
                assert contact.uri.startswith(f"sip:gw@{host}:{port}")
                assert "AUTH challenge REGISTER" in pbx.log_text()  # digest auth was used
                (state,) = await front.registrations()
                assert state.user == "gw" and state.online
                # A call to the extension at the PBX: the PBX sends it to our Contact.
                with SipEndpoint("caller", target=(pbx.host, pbx.port)) as caller:
                    call = Dialog(caller, f"sip:gw@{pbx.address}")
                    assert (await asyncio.to_thread(call.invite)).status == 200
                    (invite,) = (w1.invites() + w2.invites())
                    assert invite.first_line.startswith(f"INVITE sip:gw@{host}:{port}")
                    assert invite.headers("X-Gateway-Source") == [
                        f"127.0.0.1;port={pbx.port};proto=udp;account=pbx"]
                    assert (await asyncio.to_thread(call.bye)).status == 200
                # Anyone else calling the front directly is refused.
                with SipEndpoint("stranger", host="127.0.0.2", target=(host, port)) as other:
                    final = await asyncio.to_thread(Dialog(other, f"sip:gw@{host}:{port}").invite)
                    assert final.status == 403
                assert TEST_PASSWORD not in front.log_text()
    finally:
        await asyncio.to_thread(pbx.stop)


async def test_the_registration_is_refreshed_before_it_expires(
        tmp_path: Path, run_dir: Path) -> None:
    pbx = Kamailio(tmp_path / "pbx", auth=True)
    await asyncio.to_thread(pbx.start)
    try:
        with FakeWorker("w1") as w1:
            registration = Registration(
                name="pbx", registrar=pbx.uri, user="gw", domain=pbx.host, auth_user="gw",
                password=TEST_PASSWORD, expires_s=12)
            # uac refreshes when the expiry is within reg_timer_interval + 3 s: here ~7 s in.
            spec = front_spec([w1], run_dir, registrations=(registration,),
                              reg_timer_interval_s=2)
            async with running_front(spec):
                await asyncio.to_thread(pbx.wait_registered, "gw", scaled(10))

                def registered_twice() -> bool:
                    return pbx.log_text().count("REGISTERED sip:gw@") >= 2

                deadline = asyncio.get_running_loop().time() + scaled(15)
                while not registered_twice():
                    assert asyncio.get_running_loop().time() < deadline, pbx.log_text()[-2000:]
                    await asyncio.sleep(0.2)
                (contact,) = pbx.registered_contacts("gw")
                assert contact.expires_s > 0
    finally:
        await asyncio.to_thread(pbx.stop)
