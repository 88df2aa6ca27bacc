"""Pod network config and IPAM logic: pure, no root, no interfaces."""

from __future__ import annotations

import ipaddress

import pytest

from podkit.runtime import network
from podkit.runtime.network import Lease, NetworkConfig


def test_defaults_are_podmans_and_env_overrides_them():
    cfg = NetworkConfig.from_env({})
    assert (cfg.bridge, cfg.subnet, cfg.gateway, cfg.prefix) == (
        "podkit0",
        "10.88.0.0/16",
        "10.88.0.1",
        16,
    )
    cfg = NetworkConfig.from_env({"PODKIT_BRIDGE": "pk-test.1", "PODKIT_SUBNET": "192.168.77.0/24"})
    assert (cfg.bridge, cfg.gateway, cfg.prefix) == ("pk-test.1", "192.168.77.1", 24)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PODKIT_SUBNET": "8.8.8.0/24"}, "PODKIT_SUBNET"),  # public
        ({"PODKIT_SUBNET": "127.0.0.0/8"}, "PODKIT_SUBNET"),  # loopback is not a pod range
        ({"PODKIT_SUBNET": "10.88.0.1/16"}, "PODKIT_SUBNET"),  # host bits set
        ({"PODKIT_SUBNET": "10.88.0.0/31"}, "PODKIT_SUBNET"),  # no room for a pod
        ({"PODKIT_SUBNET": "fd00::/64"}, "PODKIT_SUBNET"),
        ({"PODKIT_SUBNET": "lots"}, "PODKIT_SUBNET"),
        ({"PODKIT_BRIDGE": "a-bridge-name-too-long"}, "PODKIT_BRIDGE"),
        ({"PODKIT_BRIDGE": "br 0"}, "PODKIT_BRIDGE"),
        ({"PODKIT_BRIDGE": "br/0"}, "PODKIT_BRIDGE"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ValueError, match=variable):
        NetworkConfig.from_env(env)


def test_free_address_skips_network_gateway_and_broadcast():
    net = ipaddress.IPv4Network("10.1.2.0/30")  # .0 network, .1 gateway, .2 pod, .3 broadcast
    assert network.free_address(net, []) == "10.1.2.2"
    assert network.free_address(net, ["10.1.2.2"]) is None
    net = ipaddress.IPv4Network("10.1.0.0/16")
    assert network.free_address(net, ["10.1.0.2", "10.1.0.4"]) == "10.1.0.3"


def test_addresses_go_round_robin_so_a_freed_one_is_not_reused_at_once():
    net = ipaddress.IPv4Network("10.1.2.0/29")  # pods .2 to .6
    assert network.free_address(net, [], after="10.1.2.3") == "10.1.2.4"
    assert network.free_address(net, ["10.1.2.2"], after="10.1.2.6") == "10.1.2.3"  # wraps
    table, a = network.lease_for({}, net, "uid-a", "1 1", after="10.1.2.2")
    assert a == "10.1.2.3"  # not .2, freed a moment ago


def test_lease_for_takes_the_lowest_free_and_is_idempotent_per_pod():
    net = ipaddress.IPv4Network("10.1.2.0/29")
    table, a = network.lease_for({}, net, "uid-a", "1 1")
    table, b = network.lease_for(table, net, "uid-b", "1 1")
    again, a2 = network.lease_for(table, net, "uid-a", "1 1")
    assert (a, b, a2) == ("10.1.2.2", "10.1.2.3", "10.1.2.2")
    assert again == table
    assert table[a] == Lease("uid-a", "1 1", network.veth_name(a))


def test_exhausted_pool_says_what_to_do():
    net = ipaddress.IPv4Network("10.1.2.0/30")
    table, _ = network.lease_for({}, net, "uid-a", "1 1")
    with pytest.raises(network.AddressPoolExhausted, match="PODKIT_SUBNET"):
        network.lease_for(table, net, "uid-b", "1 1")


def test_release_only_frees_the_named_pods_lease():
    table = {"10.1.2.2": Lease("uid-a", "1 1", "pk0a010202")}
    assert network.without(table, "10.1.2.2", "uid-other") == table  # reassigned meanwhile
    assert network.without(table, "10.1.2.2", "uid-a") == {}
    assert network.without(table, "10.1.2.9") == table


def test_split_dead_separates_leases_of_gone_owners():
    table = {
        "10.1.2.2": Lease("a", "alive", "pk1"),
        "10.1.2.3": Lease("b", "dead", "pk2"),
    }
    live, dead = network.split_dead(table, lambda owner: owner == "alive")
    assert list(live) == ["10.1.2.2"] and list(dead) == ["10.1.2.3"]


def test_veth_names_fit_linux_and_differ_per_address():
    names = {network.veth_name(f"10.88.{i}.{j}") for i in range(4) for j in range(256)}
    assert len(names) == 1024
    assert all(len(n) <= 15 for n in names)
