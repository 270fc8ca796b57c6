"""The routing half of the front's ``kamailio.cfg``: request, failure, reply and event routes.

A template module, pure like :mod:`gateway.front.render`, which assembles the whole file. The
blocks follow the flow verified in ``reference/scale-front.md``: ``request_route`` sanity-checks
everything and splits traffic by source (workers are recognised by address and port in
dispatcher set 1); ``FROM_OUTSIDE`` lets only dialogs and new INVITEs through, after the ACK
and retransmission checks, ``pike`` and ``ADMIT`` (allow-list, 403); ``DISPATCH`` picks the
least-loaded worker with room (alg 10) or answers 503 + Retry-After; ``IN_DIALOG`` follows
Record-Route towards workers only; ``FROM_WORKER`` relays the workers' own requests outwards;
``WORKER_FAILURE`` fails over with the guard against the alg-10 slot leak (trap 1).
"""

from __future__ import annotations

from gateway.front.spec import WORKER_SET, FrontSpec

#: Permissions group of the trunk allow-list.
TRUNK_GROUP = 1
#: Permissions group of registration ``i`` is ``REGISTRATION_GROUP_BASE + i``.
REGISTRATION_GROUP_BASE = 100
#: What the front answers to an out-of-dialog method it does not take.
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY, PRACK"
#: ``account`` value of the source header for trunk calls.
TRUNK_ACCOUNT = "trunk"
#: Worker replies that mean "try another worker". Not 486: a worker refuses for capacity or
#: draining with 503 (its early pjsip module answers before pjsua could say 486 Busy Here),
#: so a 486 is the dialplan's own answer ("reject: {code: 486}") and goes to the caller.
FAILOVER_CODES = "500|503"

# sanity module checks (src/modules/sanity/sanity_mod.h): R-URI SIP version (1) and scheme
# (2), required headers (4), CSeq method (32) and value (64), Content-Length (128), Expires
# (256), parse the URIs below (1024), duplicate From/To tags (4096), a first Via (16384).
# Via version/protocol (8, 16) are unimplemented upstream; Proxy-Require (512) would refuse
# extensions only the worker knows; digest checks (2048, 8192) do not apply to a proxy.
SANITY_CHECKS = 1 + 2 + 4 + 32 + 64 + 128 + 256 + 1024 + 4096 + 16384
# URIs to parse: Request-URI (1), From (2), To (4), Contact (8).
SANITY_URI_CHECKS = 1 + 2 + 4 + 8


def registration_group(index: int) -> int:
    """The permissions group of registration ``index`` (its PBX's networks)."""
    return REGISTRATION_GROUP_BASE + index


def render_routing(spec: FrontSpec) -> str:
    """Every route block of the config, in order."""
    return "\n".join([_request_route(spec), _from_outside(spec), _admit(spec), _dispatch(spec),
                      _in_dialog(spec), _from_worker(), _worker_replies(spec), _events()])


def _request_route(spec: FrontSpec) -> str:
    return f"""####### 3. Routing #######

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	# Malformed requests never reach a worker: sanity answers 400 (never to an ACK).
	if (!sanity_check("{SANITY_CHECKS}", "{SANITY_URI_CHECKS}")) {{
		xlog("L_NOTICE", "front: malformed $rm from $si:$sp dropped\\n");
		exit;
	}}
	# Workers are recognised by source address and port (dispatcher set {WORKER_SET}).
	if (ds_is_from_list("{WORKER_SET}", "2")) {{
		route(FROM_WORKER);
		exit;
	}}
	route(FROM_OUTSIDE);
}}
"""


def _from_outside(spec: FrontSpec) -> str:
    h = spec.source_header
    pike = ""
    if spec.pike is not None:
        pike = """	# Per-source INVITE rate limit: a flood is dropped without a reply.
	if (!pike_check_req()) {
		if ($rc == -2) {
			xlog("L_WARN", "front: INVITE flood from $si, blocking it\\n");
		}
		exit;
	}
"""
    return f"""# Everything from callers, trunks and the PBX: only dialogs and new INVITEs pass.
route[FROM_OUTSIDE] {{
	force_rport();
	# Never trust a source header from outside, in or out of a dialog.
	remove_hf("{h}");
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			ds_load_update();
			t_relay();
		}}
		exit;
	}}
	# An ACK without To tag belongs to no dialog; pjsip asserts (SIGABRT) on one that
	# names a 2xx. tm absorbs it if it matches a negative reply; otherwise it is dropped.
	if (is_method("ACK") && !has_totag()) {{
		t_check_trans();
		xlog("L_NOTICE", "front: ACK without To tag from $si:$sp dropped\\n");
		exit;
	}}
	# Retransmissions are answered by tm from the transaction, not passed on.
	if (!is_method("ACK")) {{
		if (t_precheck_trans()) {{
			t_check_trans();
			exit;
		}}
		t_check_trans();
	}}
	if (has_totag()) {{
		route(IN_DIALOG);
		exit;
	}}
	# Keepalives and PBX qualify: 200 while some worker can take calls.
	if (is_method("OPTIONS") && uri==myself) {{
		if (ds_is_active("{WORKER_SET}")) {{
			sl_send_reply("200", "OK");
		}} else {{
			sl_send_reply("503", "Service Unavailable");
		}}
		exit;
	}}
	if (!is_method("INVITE")) {{
		append_to_reply("Allow: {ALLOW}\\r\\n");
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}}
{pike}	route(ADMIT);
	# A preloaded Route from outside is not followed: calls only go to workers.
	remove_hf("Route");
	append_hf("{h}: $si;port=$sp;proto=$pr;account=$var(account)\\r\\n");
	record_route();
	route(DISPATCH);
}}
"""


def _admit(spec: FrontSpec) -> str:
    checks = []
    for i, reg in enumerate(spec.registrations):
        if reg.allow_from:
            checks.append(f"""	# Registration {reg.name}: the PBX calls
	# sip:{reg.user}@{spec.contact_address}
	if ($rU == "{reg.user}" && allow_source_address("{registration_group(i)}")) {{
		$var(account) = "{reg.name}";
		return;
	}}
""")
    if spec.trunk_allow:
        checks.append(f"""	# Trunk allow-list.
	if (allow_source_address("{TRUNK_GROUP}")) {{
		$var(account) = "{TRUNK_ACCOUNT}";
		return;
	}}
""")
    return f"""# Which sources may start calls: sets $var(account) for the source header, or 403.
route[ADMIT] {{
	$var(account) = "";
{"".join(checks)}	xlog("L_NOTICE", "front: INVITE from $si:$sp refused: source not allowed\\n");
	sl_send_reply("403", "Forbidden");
	exit;
}}
"""


def _retry_after(spec: FrontSpec) -> str:
    return f'append_to_reply("Retry-After: {spec.retry_after_s}\\r\\n");'


def _dispatch(spec: FrontSpec) -> str:
    return f"""# A new call: the least-loaded active worker below its maxload, or our own 503.
route[DISPATCH] {{
	if (!ds_select_dst("{WORKER_SET}", "10")) {{
		xlog("L_NOTICE", "front: no worker has room for call $ci, 503\\n");
		{_retry_after(spec)}
		sl_send_reply("503", "Service Unavailable");
		exit;
	}}
	t_on_reply("WORKER_REPLY");
	t_on_failure("WORKER_FAILURE");
	if (!t_relay()) {{
		ds_load_unset();
		sl_reply_error();
	}}
	exit;
}}
"""


def _in_dialog(spec: FrontSpec) -> str:
    h = spec.source_header
    return f"""# In-dialog requests from outside (ACK, BYE, re-INVITE, INFO, REFER, NOTIFY, UPDATE):
# they follow our Record-Route, and may only go to a worker (no relaying elsewhere).
route[IN_DIALOG] {{
	if (loose_route()) {{
		if ($du != $null && $du != "") {{
			$var(next) = $du;
		}} else {{
			$var(next) = $ru;
		}}
		if (!ds_is_from_list("{WORKER_SET}", "2", "$var(next)")) {{
			xlog("L_NOTICE", "front: in-dialog $rm from $si:$sp not towards a worker, 403\\n");
			if (!is_method("ACK")) {{
				sl_send_reply("403", "Forbidden");
			}}
			exit;
		}}
		if (is_method("BYE")) {{
			ds_load_update();
		}}
		append_hf("{h}: $si;port=$sp;proto=$pr\\r\\n");
		if (!t_relay()) {{
			sl_reply_error();
		}}
		exit;
	}}
	# An ACK to a negative reply: tm absorbs it (and stops the script); other ACKs drop.
	if (is_method("ACK")) {{
		t_check_trans();
		exit;
	}}
	sl_send_reply("404", "Not Here");
	exit;
}}
"""


def _from_worker() -> str:
    return """# Requests a worker sends: in-dialog ones towards the caller, and new calls the
# gateway places (REFER transfers, originate, consult legs), relayed to their Request-URI.
route[FROM_WORKER] {
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (!is_method("ACK")) {
		if (t_precheck_trans()) {
			t_check_trans();
			exit;
		}
		t_check_trans();
	}
	if (has_totag()) {
		if (loose_route()) {
			if (is_method("BYE")) {
				ds_load_update();
			}
			if (!t_relay()) {
				sl_reply_error();
			}
			exit;
		}
		if (is_method("ACK")) {
			t_check_trans();
			exit;
		}
		sl_send_reply("404", "Not Here");
		exit;
	}
	if (is_method("OPTIONS") && uri==myself) {
		sl_send_reply("200", "OK");
		exit;
	}
	# A worker using the front as its outbound proxy sends a Route to us: consume it.
	loose_route();
	if (uri==myself && ($du == $null || $du == "")) {
		xlog("L_NOTICE", "front: worker $si:$sp sent $rm to the front itself, 404\\n");
		sl_send_reply("404", "Not Found");
		exit;
	}
	if (is_method("INVITE|SUBSCRIBE|REFER")) {
		record_route();
	}
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}
"""


def _worker_replies(spec: FrontSpec) -> str:
    return f"""# A worker's 2xx confirms the call in the load table (it then expires after
# ds_hash_expire instead of ds_hash_initexpire). Never ds_load_unset() here: a later
# ds_next_dst() would fail with "cannot find load".
onreply_route[WORKER_REPLY] {{
	if (status =~ "^2[0-9][0-9]$") {{
		ds_load_update();
	}}
}}

# The worker refused the call or never answered.
failure_route[WORKER_FAILURE] {{
	if (t_is_canceled()) {{
		exit;
	}}
	$var(silent) = 0;
	if (t_branch_timeout() && !t_branch_replied()) {{
		$var(silent) = 1;
	}}
	# 408 counts only when the worker sent it; tm's own 408 after a 180 means nobody
	# answered, and the caller has waited long enough.
	if ($var(silent) == 1 || t_check_status("{FAILOVER_CODES}")
			|| (t_check_status("408") && !t_branch_timeout())) {{
		# Silent or broken (not merely full): out until a probe succeeds again.
		if ($var(silent) == 1 || t_check_status("500|408")) {{
			ds_mark_dst("tp");
		}}
		# Only call ds_next_dst() when a next worker exists: with none left it deletes the
		# current record first, and ds_load_unset() below could no longer free the slot.
		if ($xavp(_dsdst_[1]=>uri) != $null && ds_next_dst()) {{
			xlog("L_NOTICE", "front: call $ci fails over to $du\\n");
			t_on_reply("WORKER_REPLY");
			t_on_failure("WORKER_FAILURE");
			if (t_relay()) {{
				exit;
			}}
		}}
		ds_load_unset();
		xlog("L_NOTICE", "front: no worker took call $ci, 503\\n");
		{_retry_after(spec)}
		t_reply("503", "Service Unavailable");
		exit;
	}}
	# Any other final answer (404, 480, 603...) goes back to the caller as it is.
	ds_load_unset();
}}
"""


def _events() -> str:
    return """####### 4. Events #######

event_route[dispatcher:dst-down] {
	xlog("L_WARN", "front: worker down $ru\\n");
}

event_route[dispatcher:dst-up] {
	xlog("L_WARN", "front: worker up $ru\\n");
}
"""
