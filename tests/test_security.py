"""Secrets are redacted; a local run listens on loopback only (checked on a live run in test_faults, and for
secrets in catalogs and output on the messy run of test_bad_inputs)."""

from __future__ import annotations

import ipaddress

import psutil


def listening(root: psutil.Process) -> dict[tuple[str, int], str]:
    """(address, port) -> process name, for every listening TCP socket and bound UDP socket of a process tree."""
    found = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and conn.laddr):  # TCP LISTEN, or UDP
                    found[(conn.laddr.ip, conn.laddr.port)] = " ".join(proc.cmdline()[:2])[:80]
        except psutil.Error:
            continue
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback on a dual-stack socket
    return (mapped or ip).is_loopback


def test_redact_removes_url_credentials_and_secret_environment_values(monkeypatch):
    from mtcore.errors import redact

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_4242")
    monkeypatch.setenv("PLAIN_SETTING", "not-a-secret-value")
    text = "s3://AKIA123:wJalr@bucket/x.mp4 failed; /data/hf_not_a_real_token_4242/a.mp4; not-a-secret-value"
    assert redact(text) == "s3://***@bucket/x.mp4 failed; /data/***/a.mp4; not-a-secret-value"
    assert is_loopback("127.0.0.1") and is_loopback("::ffff:127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")
