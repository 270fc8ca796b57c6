"""The SIP worker process: one pjsua2 endpoint and its calls, supervised by the control process."""
