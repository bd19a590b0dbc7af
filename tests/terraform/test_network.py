"""Firewall rules: pod VMs admit only the forwarder (TCP) and pod network VXLAN (UDP), only from workers."""

from __future__ import annotations

from typing import Any

from tests.terraform.tfmodules import FORWARDER_PORT, VXLAN_PORT, module

# What every module must open, and nothing more: (protocol, port) after resolving variable defaults.
EXPECTED = {("tcp", FORWARDER_PORT), ("udp", VXLAN_PORT)}


def _port(value: Any) -> int:
    return int(value)


def test_aws_security_group_admits_only_the_worker_group() -> None:
    mod = module("aws")
    assert "aws_security_group_rule" not in mod.resources, (
        "rules are separate aws_vpc_security_group_* resources"
    )
    group = mod.resource("aws_security_group", "podvm")
    assert "ingress" not in group and "egress" not in group, "no inline rules"
    opened = set()
    for name, rule in mod.resources["aws_vpc_security_group_ingress_rule"].items():
        assert rule["security_group_id"] == "${aws_security_group.podvm[0].id}", name
        assert rule["referenced_security_group_id"] == "${var.worker_security_group_id}", name
        for other_source in ("cidr_ipv4", "cidr_ipv6", "prefix_list_id"):
            assert other_source not in rule, f"{name} also admits {other_source}"
        low, high = _port(mod.resolve(rule["from_port"])), _port(mod.resolve(rule["to_port"]))
        assert low == high, f"{name} opens a range"
        opened.add((rule["ip_protocol"], low))
    assert opened == EXPECTED


def test_aws_security_group_exists_only_with_a_worker_group() -> None:
    mod = module("aws")
    assert mod.locals["create_sg"] == "${var.worker_security_group_id != null}"
    assert mod.resource("aws_security_group", "podvm")["count"] == "${local.create_sg ? 1 : 0}"
    assert (
        mod.resource("aws_vpc_security_group_ingress_rule", "vxlan")["count"]
        == "${local.create_vxlan ? 1 : 0}"
    )
    assert mod.locals["create_vxlan"] == "${local.create_sg && var.vxlan_port != null}"


def test_azure_nsg_admits_only_the_worker_subnet_then_denies_the_rest() -> None:
    mod = module("azure")
    rules = mod.resources["azurerm_network_security_rule"]
    allows = {name: rule for name, rule in rules.items() if rule["access"] == "Allow"}
    denies = {name: rule for name, rule in rules.items() if rule["access"] == "Deny"}
    opened = set()
    for name, rule in allows.items():
        assert rule["direction"] == "Inbound", name
        assert rule["network_security_group_name"] == "${azurerm_network_security_group.podvm.name}", name
        assert rule["source_address_prefixes"] == "${var.worker_subnet_prefixes}", name
        assert "source_address_prefix" not in rule, f"{name} has a second source"
        assert "destination_port_ranges" not in rule, name
        opened.add((rule["protocol"].lower(), _port(mod.resolve(rule["destination_port_range"]))))
    assert opened == EXPECTED
    [deny] = denies.values()
    assert deny["direction"] == "Inbound"
    assert (deny["protocol"], deny["source_address_prefix"], deny["destination_port_range"]) == (
        "*",
        "*",
        "*",
    )
    # Lower numbers win: every allow must come before the deny, and the deny before AllowVnetInBound (65000).
    assert all(rule["priority"] < deny["priority"] for rule in allows.values())
    assert deny["priority"] <= 4096


def test_gcp_firewall_admits_only_the_worker_tag() -> None:
    mod = module("gcp")
    opened = set()
    for name, rule in mod.resources["google_compute_firewall"].items():
        assert rule["direction"] == "INGRESS", name
        assert rule["network"] == "${var.network}", name
        assert rule["source_tags"] == ["${var.worker_network_tag}"], name
        for other_source in ("source_ranges", "source_service_accounts", "deny"):
            assert other_source not in rule, f"{name} has {other_source}"
        for allow in rule["allow"]:
            ports = mod.resolve(allow["ports"])
            assert len(ports) == 1, f"{name} opens several ports"
            opened.add((allow["protocol"], _port(ports[0])))
    assert opened == EXPECTED
    assert mod.resource("google_compute_firewall", "vxlan")["count"] == "${var.vxlan_port != null ? 1 : 0}"


def test_vxlan_port_is_the_upstream_default_everywhere() -> None:
    for cloud in ("aws", "azure", "gcp"):
        assert module(cloud).default("vxlan_port") == VXLAN_PORT
