"""A pod's resolv.conf from dnsPolicy and dnsConfig, against the kubelet's rules."""

from __future__ import annotations

from podkit.runtime.dns import parse, resolv_conf

HOST = """# generated
domain corp.example
search corp.example lab.example
nameserver 192.0.2.53
nameserver 192.0.2.54 ; a comment
options edns0 ndots:1
"""


def test_the_host_file_is_read_as_the_resolver_reads_it() -> None:
    assert parse(HOST) == (
        ["192.0.2.53", "192.0.2.54"],
        ["corp.example", "lab.example"],
        ["edns0", "ndots:1"],
    )


def test_default_and_cluster_first_use_the_hosts_resolvers() -> None:
    expected = (
        "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\n"
        "options edns0 ndots:1\n"
    )
    assert resolv_conf({"dnsPolicy": "Default"}, HOST) == expected
    assert resolv_conf({}, HOST) == expected  # ClusterFirst, no cluster DNS: the host's


def test_dns_config_adds_to_the_policy_and_none_keeps_only_it() -> None:
    config = {
        "nameservers": ["192.0.2.54", "198.51.100.1", "198.51.100.2"],
        "searches": ["ns1.svc.cluster.local", "corp.example"],
        "options": [{"name": "ndots", "value": "5"}, {"name": "single-request"}],
    }
    assert resolv_conf({"dnsPolicy": "Default", "dnsConfig": config}, HOST) == (
        "nameserver 192.0.2.53\nnameserver 192.0.2.54\nnameserver 198.51.100.1\n"
        "search corp.example lab.example ns1.svc.cluster.local\n"
        "options edns0 ndots:5 single-request\n"
    )
    assert resolv_conf({"dnsPolicy": "None", "dnsConfig": config}, HOST) == (
        "nameserver 192.0.2.54\nnameserver 198.51.100.1\nnameserver 198.51.100.2\n"
        "search ns1.svc.cluster.local corp.example\noptions ndots:5 single-request\n"
    )
