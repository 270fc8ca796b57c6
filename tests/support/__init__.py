"""Harness for SIP tests and benchmarks: real peers (SIPp, Kamailio, tcpdump) on 127.0.0.1.

Every process these modules start is bounded in time (a ``timeout`` wrapper and a stop on
context exit that always waits), writes its output to a log file next to the test's other
artefacts, and is signalled by its own process id only. The pure parts (:mod:`.rtp`, the pcap
reader in :mod:`.capture`, the analysis helpers in :mod:`.audio`) do no I/O beyond reading
files and are unit-tested on fixtures.
"""
