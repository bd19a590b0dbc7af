"""AWS settings: upstream's flag and variable names, and every bad combination reported at start."""

from __future__ import annotations

import argparse

import pytest

from providers.aws import PLUGIN
from providers.aws.config import make_client, parse_config
from providers.settings import ConfigError, add_arguments, resolve

BASE = {"PODVM_AMI_ID": "ami-0123456789abcdef0", "AWS_REGION": "eu-west-1"}


def config_problems(env: dict[str, str], argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser, PLUGIN.settings)
    with pytest.raises(ConfigError) as err:
        PLUGIN.create(resolve(PLUGIN.settings, parser.parse_args(argv or []), env), "node-a")
    return err.value.problems


def test_defaults_match_upstream() -> None:
    config = parse_config(resolve(PLUGIN.settings, None, BASE))
    assert config.instance_type == "m6a.large"
    assert config.instance_types == ()
    assert config.root_volume_size == 30
    assert config.launch_template_name == "kata"
    assert not (config.use_launch_template or config.use_public_ip or config.disable_cvm)


def test_environment_variables() -> None:
    env = {
        **BASE,
        "PODVM_INSTANCE_TYPE": "c6a.large",
        "PODVM_INSTANCE_TYPES": "c6a.large, m6a.xlarge",
        "SSH_KP_NAME": "key",
        "AWS_SUBNET_ID": "subnet-1",
        "AWS_SG_IDS": "sg-1,sg-2",
        "USE_PODVM_LAUNCHTEMPLATE": "true",
        "PODVM_LAUNCHTEMPLATE_NAME": "podvm",
        "USE_PUBLIC_IP": "true",
        "ROOT_VOLUME_SIZE": "50",
        "DISABLECVM": "true",
        "TAGS": "team=cc,env=prod",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
    }
    config = parse_config(resolve(PLUGIN.settings, None, env))
    assert config.region == "eu-west-1"
    assert config.instance_type == "c6a.large"
    assert config.instance_types == ("c6a.large", "m6a.xlarge")
    assert (config.key_name, config.subnet_id) == ("key", "subnet-1")
    assert config.security_group_ids == ("sg-1", "sg-2")
    assert config.use_launch_template and config.launch_template_name == "podvm"
    assert config.use_public_ip and config.disable_cvm
    assert config.root_volume_size == 50
    assert config.tags == {"team": "cc", "env": "prod"}
    assert config.endpoint_url == "http://127.0.0.1:5000"


def test_upstream_flags_win_over_the_environment() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, PLUGIN.settings)
    flags = parser.parse_args(
        [
            *("-imageid", "ami-flag", "-instance-types", "m6a.large,c6a.large", "-disable-cvm", "-use-lt"),
            *("-aws-region", "us-west-2", "-root-volume-size", "40", "-securitygroupids", "sg-9"),
        ]
    )
    config = parse_config(resolve(PLUGIN.settings, flags, BASE))
    assert config.image_id == "ami-flag"
    assert config.region == "us-west-2"
    assert config.instance_types == ("m6a.large", "c6a.large")
    assert config.disable_cvm and config.use_launch_template
    assert config.root_volume_size == 40
    assert config.security_group_ids == ("sg-9",)


def test_missing_ami_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PODVM_AMI_ID is required"):
        resolve(PLUGIN.settings, None, {"AWS_REGION": "eu-west-1"})


def test_every_contradiction_is_reported_at_once() -> None:
    problems = config_problems(
        {
            **BASE,
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "TAGS": "team=cc,broken,Name=x,aws:cost=1",
            "ROOT_VOLUME_SIZE": "-1",
            "USE_PODVM_LAUNCHTEMPLATE": "true",
            "CLOUD_API_RATE_LIMIT": "0",
        },
        ["-aws-lt-name", ""],  # an empty variable means "unset" (upstream); an empty flag does not
    )
    text = "\n".join(problems)
    assert len(problems) == 7, text
    assert "AWS_SECRET_ACCESS_KEY" in text
    assert "'broken' is not key=value" in text
    assert "'Name' is reserved" in text and "'aws:cost' is reserved" in text
    assert "ROOT_VOLUME_SIZE must be 0 or more" in text
    assert "PODVM_LAUNCHTEMPLATE_NAME" in text
    assert "CLOUD_API_RATE_LIMIT" in text


def test_session_token_needs_keys() -> None:
    problems = config_problems({**BASE, "AWS_SESSION_TOKEN": "token"})
    assert problems == ["-aws-session-token (AWS_SESSION_TOKEN) needs an access key id and secret key"]


def test_launch_template_with_confidential_vms_is_accepted() -> None:
    # The template, not us, then decides about SEV-SNP; validate() warns if it does not enable it.
    config = parse_config(resolve(PLUGIN.settings, None, {**BASE, "USE_PODVM_LAUNCHTEMPLATE": "true"}))
    assert config.use_launch_template and not config.disable_cvm


def test_credentials_stay_out_of_repr() -> None:
    env = {
        **BASE,
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_SESSION_TOKEN": "tok",
    }
    config = parse_config(resolve(PLUGIN.settings, None, env))
    assert config.secret_access_key == "s3cr3t"
    shown = repr(config)
    assert "s3cr3t" not in shown and "AKIAEXAMPLE" not in shown and "tok'" not in shown
    assert all(s.secret for s in PLUGIN.settings if s.env in {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


def test_no_region_anywhere_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    config = parse_config(resolve(PLUGIN.settings, None, {"PODVM_AMI_ID": "ami-1"}))
    with pytest.raises(ConfigError, match="AWS_REGION is required"):
        make_client(config)


def test_unknown_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    parser = argparse.ArgumentParser()
    add_arguments(parser, PLUGIN.settings)
    flags = parser.parse_args(["-aws-profile", "no-such-profile"])
    config = parse_config(resolve(PLUGIN.settings, flags, BASE))
    with pytest.raises(ConfigError, match="no-such-profile"):
        make_client(config)
