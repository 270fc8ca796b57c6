"""The real Kamailio front as the workers' shield: what a hostile or broken peer sends never
reaches a worker, and the caller's real source does."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import pytest

from gateway.front.spec import Pike
from tests.front.conftest import front_address, front_spec, running_front
from tests.support.frontsip import Dialog, FakeWorker, SipEndpoint, new_branch

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]


def no_bad_acks(worker: FakeWorker) -> bool:
    return all(m.tag("To") is not None for m in worker.requests("ACK"))


async def test_ack_without_to_tag_and_malformed_requests_never_reach_a_worker(
        run_dir: Path) -> None:
    with FakeWorker("w1") as w1:
        spec = front_spec([w1], run_dir)
        async with running_front(spec):
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                call = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(call.invite, ack=False)).status == 200
                # The ACK that aborts pjsip: a 2xx ACK without To tag, along the route and not.
                call.ack(with_to_tag=False)
                route, call.route = call.route, ()
                call.ack(with_to_tag=False)
                call.route = route
                call.ack()
                acks = await asyncio.to_thread(
                    w1.wait_for, lambda m: m.method == "ACK" and m.status is None)
                assert acks.tag("To") is not None
                # Malformed requests get the front's 400 (sanity) or nothing at all.
                bad_cseq = caller.request_text(
                    "INVITE", f"sip:agent@{host}:{port}", call_id="bad-cseq", from_tag="b1",
                    to=f"<sip:agent@{host}:{port}>", cseq=1).replace("CSeq: 1 INVITE",
                                                                    "CSeq: 1 BYE")
                long_body = caller.request_text(
                    "INVITE", f"sip:agent@{host}:{port}", call_id="bad-length",
                    from_tag="b2", to=f"<sip:agent@{host}:{port}>", cseq=1).replace(
                        "Content-Length: 0", "Content-Length: 500")
                no_from = "\r\n".join(
                    line for line in caller.request_text(
                        "INVITE", f"sip:agent@{host}:{port}", call_id="no-from",
                        from_tag="b3", to=f"<sip:agent@{host}:{port}>", cseq=1).split("\r\n")
                    if not line.startswith("From:"))
                for text in (bad_cseq, long_body, no_from):
                    caller.send(text)
                caller.send(b"\x00\xffnot SIP at all\r\n\r\n")
                caller.send(f"ACK sip:agent@{host}:{port} SIP/2.0\r\n\r\n")
                bad = await asyncio.to_thread(
                    caller.wait_for, lambda m: m.status == 400
                    and m.header("Call-ID") == "bad-cseq")
                assert bad.status == 400
                await asyncio.to_thread(caller.quiet_for, 0.5)
                assert [m.header("Call-ID") for m in w1.invites()] == [call.call_id]
                assert no_bad_acks(w1)
                assert (await asyncio.to_thread(call.bye)).status == 200


async def test_an_invite_flood_from_one_source_is_cut_by_pike(run_dir: Path) -> None:
    density = 10
    with FakeWorker("w1", capacity=200, mode="480") as w1, \
            FakeWorker("w2", capacity=200, mode="480") as w2:
        spec = front_spec([w1, w2], run_dir,
                          pike=Pike(sampling_time_unit_s=2, reqs_density_per_unit=density))
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("flood", host="127.0.0.9", target=(host, port)) as flood:
                started = time.monotonic()
                for i in range(100):  # 100 INVITEs/s, the rate that aborts the wheel's pjsip
                    flood.send(flood.request_text(
                        "INVITE", f"sip:agent@{host}:{port}", call_id=f"flood-{i}",
                        from_tag=f"f{i}", to=f"<sip:agent@{host}:{port}>", cseq=1,
                        branch=new_branch()))
                    await asyncio.sleep(max(0.0, started + (i + 1) / 100 - time.monotonic()))
                await asyncio.to_thread(flood.quiet_for, 1.0)
            offered = len(w1.invites()) + len(w2.invites())
            # pike blocks a source after 1x..3x the density (its tree has to grow first).
            print(f"flood: workers were offered {offered} of 100 INVITEs")
            assert 0 < offered <= 3 * density, offered
            assert "INVITE flood from 127.0.0.9" in front.log_text()
            # Others still get through.
            w1.mode = w2.mode = "answer"
            with SipEndpoint("caller", target=(host, port)) as caller:
                call = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(call.invite)).status == 200
                assert (await asyncio.to_thread(call.bye)).status == 200


async def test_a_forged_source_header_is_replaced_by_the_real_source(run_dir: Path) -> None:
    with FakeWorker("w1") as w1:
        spec = front_spec([w1], run_dir)
        async with running_front(spec):
            host, port = front_address(spec)
            with SipEndpoint("caller", host="127.0.0.3", target=(host, port)) as caller:
                forged = ("X-Gateway-Source: 6.6.6.6;port=1;proto=tls;account=vip",
                          "x-gateway-source: 7.7.7.7")
                call = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(call.invite, headers=forged)).status == 200
                (invite,) = w1.invites()
                assert invite.headers("X-Gateway-Source") == [
                    f"127.0.0.3;port={caller.port};proto=udp;account=trunk"]
                info = await asyncio.to_thread(call.request, "INFO", headers=forged)
                assert info.status == 200
                (got,) = w1.requests("INFO")
                assert got.headers("X-Gateway-Source") == [
                    f"127.0.0.3;port={caller.port};proto=udp"]
                assert (await asyncio.to_thread(call.bye)).status == 200


async def test_a_source_outside_the_allow_list_gets_403(run_dir: Path) -> None:
    with FakeWorker("w1") as w1:
        allow = (ipaddress.ip_network("127.0.0.1/32"),)
        spec = front_spec([w1], run_dir, trunk_allow=allow)
        async with running_front(spec):
            host, port = front_address(spec)
            with SipEndpoint("stranger", host="127.0.0.2", target=(host, port)) as stranger:
                final = await asyncio.to_thread(
                    Dialog(stranger, f"sip:agent@{host}:{port}").invite)
                assert final.status == 403
            with SipEndpoint("trunk", target=(host, port)) as trunk:
                call = Dialog(trunk, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(call.invite)).status == 200
                assert (await asyncio.to_thread(call.bye)).status == 200
            assert len(w1.invites()) == 1


async def test_the_front_is_no_open_relay_and_answers_what_it_keeps_for_itself(
        run_dir: Path) -> None:
    with FakeWorker("w1") as w1, FakeWorker("victim") as victim:
        spec = front_spec([w1], run_dir)
        async with running_front(spec):
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                # A made-up "in-dialog" request routed through us towards someone else.
                forged = Dialog(caller, victim.contact, to_tag="made-up",
                                route=(f"sip:{host}:{port};lr",))
                assert (await asyncio.to_thread(forged.request, "BYE")).status == 403
                # A preloaded Route on a new INVITE is not followed either: it goes to a worker.
                call = Dialog(caller, f"sip:agent@{host}:{port}")
                headers = (f"Route: <{victim.contact};lr>",)
                assert (await asyncio.to_thread(call.invite, headers=headers)).status == 200
                assert (await asyncio.to_thread(call.bye)).status == 200
                assert victim.messages() == []
                # Keepalives are answered by the front; other methods are not for workers.
                for method, status in (("OPTIONS", 200), ("REGISTER", 405), ("MESSAGE", 405)):
                    probe = Dialog(caller, f"sip:{host}:{port}")
                    got = await asyncio.to_thread(probe.request, method)
                    assert got.status == status, method
                assert [m.method for m in w1.messages(lambda m: m.status is None)
                        if m.method not in ("OPTIONS",)] == ["INVITE", "ACK", "BYE"]
