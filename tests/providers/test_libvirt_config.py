"""Settings of the libvirt provider: upstream names and defaults, and problems reported at start-up."""

from __future__ import annotations

import argparse

import pytest

from providers.libvirt.config import (
    DEFAULT_KERNEL_CMDLINE,
    DEFAULT_URI,
    SETTINGS,
    LibvirtConfig,
    parse_config,
    resolve_launch_security,
)
from providers.libvirt.domain_xml import LaunchSecurity
from providers.settings import ConfigError, add_arguments, resolve


def config_from(environ: dict[str, str], argv: list[str] | None = None) -> LibvirtConfig:
    flags = None
    if argv is not None:
        parser = argparse.ArgumentParser()
        add_arguments(parser, SETTINGS)
        flags = parser.parse_args(argv)
    return parse_config(resolve(SETTINGS, flags, environ))


def test_upstream_flag_and_environment_names() -> None:
    names = {setting.flag: setting.env for setting in SETTINGS}
    assert names == {
        "uri": "LIBVIRT_URI",
        "pool-name": "LIBVIRT_POOL",
        "network-name": "LIBVIRT_NET",
        "vol-name": "LIBVIRT_VOL_NAME",
        "launch-security": "LIBVIRT_LAUNCH_SECURITY",
        "firmware": "LIBVIRT_EFI_FIRMWARE",
        "cpu": "LIBVIRT_CPU",
        "memory": "LIBVIRT_MEMORY",
        "cpuset": "LIBVIRT_CPUSET",
        "root-disk-size": "LIBVIRT_ROOT_DISK_SIZE",
        "data-dir": None,
        "disable-cvm": "DISABLECVM",
        # ours
        "firmware-vars": "LIBVIRT_EFI_VARS",
        "user-network": "LIBVIRT_USER_NETWORK",
        "domain-type": "LIBVIRT_DOMAIN_TYPE",
        "ip-timeout": "LIBVIRT_IP_TIMEOUT",
        "kernel-vol-name": "LIBVIRT_KERNEL_VOL_NAME",
        "initrd-vol-name": "LIBVIRT_INITRD_VOL_NAME",
        "kernel-cmdline": "LIBVIRT_KERNEL_CMDLINE",
    }


def test_defaults_are_upstreams() -> None:
    config = config_from({})
    assert config == LibvirtConfig()
    assert config.uri == DEFAULT_URI == "qemu+ssh://root@192.168.122.1/system?no_verify=1"
    assert (config.pool, config.network, config.vol_name) == ("default", "default", "podvm-base.qcow2")
    assert config.firmware == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert (config.cpu, config.memory_mib, config.root_disk_gib) == (2, 8192, 10)
    assert config.launch_security is LaunchSecurity.NONE  # DISABLECVM defaults to true


def test_flags_win_over_environment() -> None:
    config = config_from(
        {
            "LIBVIRT_URI": "qemu:///system",
            "LIBVIRT_CPU": "4",
            "DISABLECVM": "false",
            "LIBVIRT_LAUNCH_SECURITY": "tdx",
        },
        ["-uri", "qemu:///session", "-data-dir", "/opt/data-dir", "-root-disk-size", "0"],
    )
    assert (config.uri, config.cpu, config.launch_security) == ("qemu:///session", 4, LaunchSecurity.TDX)
    assert config.root_disk_gib == 10  # zero means the default, as upstream


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from(
            {
                "LIBVIRT_CPU": "0",
                "LIBVIRT_MEMORY": "-1",
                "LIBVIRT_CPUSET": "0-3;5",
                "LIBVIRT_IP_TIMEOUT": "0",
                "DISABLECVM": "false",
                "LIBVIRT_LAUNCH_SECURITY": "sev",
            },
            ["-pool-name", ""],  # an empty variable means "unset" (upstream); an empty flag does not
        )
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 6
    for needle in ("LIBVIRT_CPU", "LIBVIRT_MEMORY", "LIBVIRT_CPUSET", "LIBVIRT_POOL", "LIBVIRT_IP_TIMEOUT"):
        assert needle in problems
    assert "'sev' is not one of: sev-snp, tdx, s390-pv" in problems


def test_launch_security_with_cvms_disabled_is_contradictory() -> None:
    with pytest.raises(ConfigError, match="contradicts DISABLECVM=true"):
        config_from({"LIBVIRT_LAUNCH_SECURITY": "sev-snp"})


def test_confidential_x86_needs_firmware() -> None:
    with pytest.raises(ConfigError, match="LIBVIRT_EFI_FIRMWARE is required for sev-snp"):
        config_from({"DISABLECVM": "false", "LIBVIRT_LAUNCH_SECURITY": "sev-snp"}, ["-firmware", ""])


def test_network_may_be_empty_only_with_user_networking() -> None:
    with pytest.raises(ConfigError, match="LIBVIRT_NET"):
        config_from({}, ["-network-name", ""])
    local = {"LIBVIRT_USER_NETWORK": "true", "LIBVIRT_URI": "qemu:///session"}
    assert config_from(local, ["-network-name", ""]).user_network


def test_user_networking_needs_a_local_libvirt() -> None:
    # The forwarded port is on the libvirt host's loopback: only reachable if that is this host.
    with pytest.raises(ConfigError, match="LIBVIRT_USER_NETWORK forwards ports"):
        config_from({"LIBVIRT_USER_NETWORK": "true"})  # the default URI is qemu+ssh to another host
    assert config_from({"LIBVIRT_USER_NETWORK": "true", "LIBVIRT_URI": "qemu+ssh://localhost/system"})


@pytest.mark.parametrize("cpuset", ["0", "0,2,4,6", "0-3", "0-3,8,10-12"])
def test_cpuset_forms_accepted(cpuset: str) -> None:
    assert config_from({"LIBVIRT_CPUSET": cpuset}).cpuset == cpuset


def test_empty_launch_security_is_decided_by_the_host() -> None:
    auto = config_from({"DISABLECVM": "false"})
    assert auto.launch_security is None
    assert resolve_launch_security(auto, "s390x") is LaunchSecurity.S390_PV
    with pytest.raises(ConfigError, match="x86_64 host has no default: set it to sev-snp or tdx"):
        resolve_launch_security(auto, "x86_64")  # fail closed: no silently plain VM
    explicit = config_from({"DISABLECVM": "false", "LIBVIRT_LAUNCH_SECURITY": "sev-snp"})
    assert resolve_launch_security(explicit, "x86_64") is LaunchSecurity.SEV_SNP


def test_domain_type_is_kvm_or_software_emulation_and_never_confidential() -> None:
    base = resolve(SETTINGS, None, {"LIBVIRT_URI": "qemu:///system"})
    assert parse_config(base).domain_type == "kvm"
    assert parse_config({**base, "domain_type": "qemu"}).domain_type == "qemu"
    with pytest.raises(ConfigError, match="LIBVIRT_DOMAIN_TYPE 'xen'"):
        parse_config({**base, "domain_type": "xen"})
    confidential = {**base, "domain_type": "qemu", "disable_cvm": False, "launch_security": "sev-snp"}
    with pytest.raises(ConfigError, match="cannot run confidential VMs"):
        parse_config(confidential)


def test_direct_kernel_boot_settings() -> None:
    assert not config_from({}).direct_boot  # the firmware boots, as upstream's
    config = config_from(
        {"LIBVIRT_KERNEL_VOL_NAME": "podvm-vmlinuz", "LIBVIRT_INITRD_VOL_NAME": "podvm-initrd.img"},
        ["-kernel-cmdline", "root=/dev/vda2 rw quiet"],
    )
    assert config.direct_boot
    assert (config.kernel_vol, config.initrd_vol, config.kernel_cmdline) == (
        "podvm-vmlinuz",
        "podvm-initrd.img",
        "root=/dev/vda2 rw quiet",
    )
    assert config_from({"LIBVIRT_KERNEL_VOL_NAME": "k"}).kernel_cmdline == DEFAULT_KERNEL_CMDLINE


def test_direct_kernel_boot_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from({"LIBVIRT_INITRD_VOL_NAME": "podvm-initrd.img"})
    assert caught.value.problems == ["LIBVIRT_INITRD_VOL_NAME is set without LIBVIRT_KERNEL_VOL_NAME"]
    with pytest.raises(ConfigError) as caught:
        config_from(
            {"LIBVIRT_KERNEL_VOL_NAME": "k", "DISABLECVM": "false", "LIBVIRT_LAUNCH_SECURITY": "sev-snp"}
        )
    assert any("non-confidential VMs only" in problem for problem in caught.value.problems)
