"""Multi-node: the cluster launcher files pass Ray's own validator and ship the cluster closed (the dashboard on
localhost, token authentication, on AWS scoped instance profiles and no SSH from the internet), and a real two-node
Ray cluster on this machine runs a grid across both nodes and loses a node mid-trial at no cost but time."""

import ast
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import jsonschema
import pandas as pd
import pytest
import ray
import yaml
from ray.autoscaler._private import commands
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parents[1]
AWS, ONPREM = ROOT / "cluster.yaml", ROOT / "cluster-onprem.yaml"
POLICIES = {path.stem: path for path in sorted((ROOT / "aws").glob("*-policy.json"))}
SECURITY_GROUP = ROOT / "aws" / "raybench-security-group.json"  # the inbound rules of the nodes' group
TOKEN_FILE = "~/.ray/auth_token"  # where `ray get-auth-token --generate` writes the token, and Ray reads it
WORLD = {"0.0.0.0/0", "::/0"}

pytestmark = pytest.mark.cluster

# The request parameters of EC2 RunInstances (botocore's ec2 2016-11-15 model). Ray's AWS provider hands a node
# type's node_config to boto3 unchecked (Ray's schema says only "object"), so a misspelt key would fail only at
# launch; SubnetIds is Ray's own key (one SubnetId is picked from the list).
RUN_INSTANCES = frozenset(
    """
    AdditionalInfo BlockDeviceMappings CapacityReservationSpecification ClientToken CpuOptions CreditSpecification
    DisableApiStop DisableApiTermination DryRun EbsOptimized ElasticGpuSpecification ElasticInferenceAccelerators
    EnablePrimaryIpv6 EnclaveOptions HibernationOptions IamInstanceProfile ImageId InstanceInitiatedShutdownBehavior
    InstanceMarketOptions InstanceType Ipv6AddressCount Ipv6Addresses KernelId KeyName LaunchTemplate
    LicenseSpecifications MaintenanceOptions MaxCount MetadataOptions MinCount Monitoring NetworkInterfaces
    NetworkPerformanceOptions Operator Placement PrivateDnsNameOptions PrivateIpAddress RamdiskId SecondaryInterfaces
    SecurityGroupIds SecurityGroups SubnetId TagSpecifications UserData SubnetIds""".split()  # noqa: SIM905 (a list literal would be 60 lines)
)
EBS = frozenset(
    """AvailabilityZone AvailabilityZoneId DeleteOnTermination EbsCardIndex Encrypted Iops KmsKeyId
    OutpostArn SnapshotId Throughput VolumeInitializationRate VolumeSize VolumeType""".split()  # noqa: SIM905
)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def validate_aws(config: dict) -> dict:
    """What `ray up` does to the file before its first call to AWS (the provider's own bootstrap, which needs
    credentials, comes next): merge the provider's defaults and the setup commands, check the Docker and
    worker settings, validate against the schema the ray wheel ships. Then the node_config keys, which Ray
    does not check, against EC2's RunInstances parameters."""
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        ebs = {key for mapping in node_config.get("BlockDeviceMappings", []) for key in mapping.get("Ebs", {})}
        unknown = (set(node_config) - RUN_INSTANCES) | {f"Ebs.{key}" for key in ebs - EBS}
        if unknown:
            raise ValueError(f"node type {name!r}: {sorted(unknown)} are not EC2 RunInstances parameters")
    return config


def validate_onprem(config: dict) -> dict:
    """The whole of `ray up`'s config preparation for the local provider (nothing of it contacts the boxes)."""
    return commands._bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def ray_start(commands: list[str]) -> list[str]:
    """The words of the one `ray start` in a node type's start commands, its environment assignments first."""
    (words,) = [
        shlex.split(part) for command in commands for part in command.split(";") if " ray start " in f" {part} "
    ]
    return words


def option(words: list[str], name: str, default: str) -> str:
    for word, following in zip(words, [*words[1:], None], strict=True):
        if word == name and following is not None:
            return following
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return default


def rays_default_ssh_rules() -> list[dict]:
    """The SSH rules Ray's AWS provider puts into every security group it creates, ahead of provider.security_group's
    IpPermissions (_create_default_inbound_rules). Read from the installed source: importing it needs boto3, which
    only the head node installs."""
    source = (Path(ray.__file__).parent / "autoscaler" / "_private" / "aws" / "config.py").read_text()
    (function,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "_create_default_ssh_inbound_rules"
    ]
    (returned,) = [node for node in ast.walk(function) if isinstance(node, ast.Return)]
    return ast.literal_eval(returned.value)


def ssh_sources(config: dict) -> set[str]:
    """The address ranges that may SSH into the AWS nodes. A node type without SecurityGroupIds gets a group that
    Ray creates with its default rules plus provider.security_group's; a named group Ray leaves as it is (README.md
    makes ours from aws/raybench-security-group.json)."""
    node_configs = [node_type["node_config"] for node_type in config["available_node_types"].values()]
    rules = []
    if any("SecurityGroupIds" not in node_config for node_config in node_configs):
        rules += rays_default_ssh_rules() + config["provider"].get("security_group", {}).get("IpPermissions", [])
    if any("SecurityGroupIds" in node_config for node_config in node_configs):
        rules += json.loads(SECURITY_GROUP.read_text())
    return {
        address_range.get("CidrIp", address_range.get("CidrIpv6"))
        for rule in rules
        if rule["IpProtocol"] in ("-1", "all") or rule.get("FromPort", 0) <= 22 <= rule.get("ToPort", 65535)
        for address_range in rule.get("IpRanges", []) + rule.get("Ipv6Ranges", [])
    }


def check_closed(config: dict) -> None:
    """Raise ValueError unless a prepared cluster config ships the cluster closed: the dashboard (and with it job
    submission) on the head's localhost, Ray's token authentication on every node and in its shells, and on AWS a
    head instance profile of our own and SSH only from the admin range."""
    head = ray_start(config["head_start_ray_commands"])
    host = option(head, "--dashboard-host", default="localhost")  # Ray's default
    if host not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError(f"the dashboard and job submission listen on {host}, beyond the head's localhost")
    for kind in ("head", "worker"):
        words = ray_start(config[f"{kind}_start_ray_commands"])
        if "RAY_AUTH_MODE=token" not in words[: words.index("ray")]:
            raise ValueError(f"the {kind}'s `ray start` runs without RAY_AUTH_MODE=token")
    if config["file_mounts"].get(TOKEN_FILE) != TOKEN_FILE:
        raise ValueError(f"the nodes do not get the token: file_mounts lacks {TOKEN_FILE}")
    shell_setup = config.get("docker", {}).get("run_options", []) + config["setup_commands"]
    if not any("RAY_AUTH_MODE=token" in line for line in shell_setup):
        raise ValueError("the nodes' shells (`ray exec ... 'ray status'`, the driver) lack RAY_AUTH_MODE=token")
    if config["provider"]["type"] != "aws":
        return
    node_types = config["available_node_types"]
    if "IamInstanceProfile" not in node_types[config["head_node_type"]]["node_config"]:
        raise ValueError("the head would get Ray's ray-autoscaler-v1 instance profile (EC2 and S3 full access)")
    if len({tuple(node_type["node_config"].get("SecurityGroupIds", ())) for node_type in node_types.values()}) > 1:
        raise ValueError("the node types are in different security groups")
    if ssh_sources(config) & WORLD:
        raise ValueError(f"SSH into the nodes is open to {sorted(ssh_sources(config) & WORLD)}")


def test_aws_cluster_file_passes_rays_validator():
    config = validate_aws(load(AWS))
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert config["provider"]["type"] == "aws"
    assert head["resources"] == {"CPU": 0}  # trials never land on the head
    assert len(workers) == 1 and workers[0]["resources"]["GPU"] == 1
    assert 1 <= workers[0]["min_workers"] <= workers[0]["max_workers"] <= config["max_workers"]
    assert "IamInstanceProfile" in workers[0]["node_config"]  # the workers write checkpoints to S3
    assert head["node_config"]["SecurityGroupIds"] == workers[0]["node_config"]["SecurityGroupIds"]
    # the cluster runs the Ray this checkout runs (ray up and ray job submit need the same version)
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    # none of Ray's AWS default commands (a nightly Ray wheel) survive the merge with its defaults.yaml
    assert not any("ray-wheels" in c for c in config["head_setup_commands"] + config["worker_setup_commands"])


def test_onprem_cluster_file_passes_rays_validator():
    source = load(ONPREM)
    config = validate_onprem(source)
    (node_type,) = config["available_node_types"].values()
    assert config["provider"]["type"] == "local"
    assert node_type["min_workers"] == node_type["max_workers"] == len(source["provider"]["worker_ips"]) >= 1


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_both_files_sync_this_checkout_and_install_it(path):
    config = load(path)
    # `ray up` runs from the project root; the laptop's token goes to every node
    assert config["file_mounts"] == {"~/raybench": ".", TOKEN_FILE: TOKEN_FILE}
    # what .gitignore leaves out (above all a multi-GB .venv) stays behind
    assert ".gitignore" in config["rsync_filter"] and ".venv/" in (ROOT / ".gitignore").read_text().split()
    assert any("pip install -e ~/raybench" in c for c in config["setup_commands"])
    # the same data path on every node
    assert any("raybench.data download ~/data" in c for c in config["setup_commands"])


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _set(path: tuple, value):
    def apply(config: dict) -> None:
        *parents, key = path
        for part in parents:
            config = config[part]
        config[key] = value

    return apply


AWS_BREAKAGES = {
    "top-level key misspelt": (lambda c: _rename(c, "setup_commands", "setup_comands"), jsonschema.ValidationError),
    "node-type key misspelt": (
        lambda c: _rename(c["available_node_types"]["gpu"], "min_workers", "min_worker"),
        jsonschema.ValidationError,
    ),
    "docker key misspelt": (
        lambda c: _rename(c["docker"], "pull_before_run", "pull_before_rum"),
        jsonschema.ValidationError,
    ),
    "docker image misspelt": (lambda c: _rename(c["docker"], "image", "imgae"), AssertionError),  # Ray's docker check
    "fractional GPU": (_set(("available_node_types", "gpu", "resources", "GPU"), 0.5), jsonschema.ValidationError),
    "negative CPU": (_set(("available_node_types", "head", "resources", "CPU"), -1), jsonschema.ValidationError),
    "GPU as a string": (_set(("available_node_types", "gpu", "resources", "GPU"), "1"), jsonschema.ValidationError),
    "head type undefined": (_set(("head_node_type",), "haed"), ValueError),
    "min_workers above max_workers": (_set(("max_workers",), 0), ValueError),
    "EC2 parameter misspelt": (
        lambda c: _rename(c["available_node_types"]["gpu"]["node_config"], "InstanceType", "InstanceTyp"),
        ValueError,
    ),
    "EBS parameter misspelt": (
        lambda c: _rename(
            c["available_node_types"]["gpu"]["node_config"]["BlockDeviceMappings"][0]["Ebs"], "VolumeSize", "VolumeSiz"
        ),
        ValueError,
    ),
}

ONPREM_BREAKAGES = {
    "top-level key misspelt": (
        lambda c: _rename(c, "head_start_ray_commands", "head_start_ray_comands"),
        jsonschema.ValidationError,
    ),
    "auth key misspelt": (lambda c: _rename(c["auth"], "ssh_user", "ssh_usr"), jsonschema.ValidationError),
    "worker_ips misspelt": (lambda c: _rename(c["provider"], "worker_ips", "worker_ip"), click.ClickException),
    "node types on-premise": (
        _set(("available_node_types",), {"gpu": {"resources": {"GPU": 1}, "node_config": {}}}),
        click.ClickException,
    ),
}


@pytest.mark.parametrize("breakage", AWS_BREAKAGES, ids=str)
def test_aws_file_with_a_typo_or_a_bad_resource_is_rejected(breakage):
    mutate, error = AWS_BREAKAGES[breakage]
    config = load(AWS)
    validate_aws(config)  # the file itself passes
    mutate(config)
    with pytest.raises(error):
        validate_aws(config)


@pytest.mark.parametrize("breakage", ONPREM_BREAKAGES, ids=str)
def test_onprem_file_with_a_typo_is_rejected(breakage):
    mutate, error = ONPREM_BREAKAGES[breakage]
    config = load(ONPREM)
    mutate(config)
    with pytest.raises(error):
        validate_onprem(config)


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_both_files_ship_the_cluster_closed(path):
    check_closed((validate_aws if path == AWS else validate_onprem)(load(path)))


def _edit_command(key: str, old: str, new: str):
    def apply(config: dict) -> None:
        assert any(old in command for command in config[key]), (key, old)
        config[key] = [command.replace(old, new) for command in config[key]]

    return apply


def _in_rays_own_group(config: dict) -> None:
    """Ray's own security group, named, with an SSH rule for the admin range only: Ray adds its 0.0.0.0/0 rule."""
    for node_type in config["available_node_types"].values():
        node_type["node_config"].pop("SecurityGroupIds")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}
    config["provider"]["security_group"] = {"GroupName": "raybench", "IpPermissions": [ssh]}


# Each one of what the files shipped before the cluster was closed, or a way back to it.
OPENINGS = {
    "dashboard on every interface": _edit_command(
        "head_start_ray_commands", "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"
    ),
    "head without the token": _edit_command("head_start_ray_commands", "RAY_AUTH_MODE=token ", ""),
    "workers without the token": _edit_command("worker_start_ray_commands", "RAY_AUTH_MODE=token ", ""),
    "token not copied": lambda c: c["file_mounts"].pop(TOKEN_FILE),
}
AWS_OPENINGS = {
    **OPENINGS,
    "shells without the token": lambda c: c["docker"]["run_options"].remove("--env RAY_AUTH_MODE=token"),
    "Ray's default head profile": lambda c: c["available_node_types"]["head"]["node_config"].pop("IamInstanceProfile"),
    "Ray's own security group with an admin SSH rule": _in_rays_own_group,
    "workers in Ray's own security group": lambda c: c["available_node_types"]["gpu"]["node_config"].pop(
        "SecurityGroupIds"
    ),
}
ONPREM_OPENINGS = {
    **OPENINGS,
    "shells without the token": lambda c: c.update(
        setup_commands=[command for command in c["setup_commands"] if "RAY_AUTH_MODE" not in command]
    ),
}


@pytest.mark.parametrize("opening", AWS_OPENINGS, ids=str)
def test_aws_file_that_opens_the_cluster_is_rejected(opening):
    config = load(AWS)
    AWS_OPENINGS[opening](config)
    with pytest.raises(ValueError):
        check_closed(validate_aws(config))


@pytest.mark.parametrize("opening", ONPREM_OPENINGS, ids=str)
def test_onprem_file_that_opens_the_cluster_is_rejected(opening):
    config = load(ONPREM)
    ONPREM_OPENINGS[opening](config)
    with pytest.raises(ValueError):
        check_closed(validate_onprem(config))


def test_the_nodes_group_admits_ssh_from_the_admin_range_and_the_nodes_to_each_other():
    rules = json.loads(SECURITY_GROUP.read_text())
    (internal,) = [rule for rule in rules if "UserIdGroupPairs" in rule]
    groups = [pair["GroupId"] for pair in internal["UserIdGroupPairs"]]
    assert internal["IpProtocol"] == "-1" and groups == ["SECURITY_GROUP_ID"]  # all traffic within the group
    (ssh,) = [rule for rule in rules if "UserIdGroupPairs" not in rule]
    assert (ssh["IpProtocol"], ssh["FromPort"], ssh["ToPort"]) == ("tcp", 22, 22) and "Ipv6Ranges" not in ssh
    assert [address_range["CidrIp"] for address_range in ssh["IpRanges"]] == ["ADMIN_CIDR"]


def statements(name: str) -> list[dict]:
    return json.loads(POLICIES[name].read_text())["Statement"]


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@pytest.mark.parametrize("name", POLICIES)
def test_policies_name_every_action(name):
    for statement in statements(name):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        actions = listed(statement["Action"])
        assert actions and not any("*" in action for action in actions), statement
        if "*" in listed(statement.get("Resource", [])):  # only where AWS has no resource to name, and by region
            assert all(action.startswith("ec2:Describe") for action in actions) and "Condition" in statement


def test_the_head_may_pass_only_the_workers_role_and_end_only_the_clusters_nodes():
    head = statements("raybench-head-policy")
    (passing,) = [statement for statement in head if "iam:PassRole" in listed(statement["Action"])]
    worker_profile = load(AWS)["available_node_types"]["gpu"]["node_config"]["IamInstanceProfile"]["Arn"]
    # README.md names each role after its instance profile
    assert listed(passing["Resource"]) == [f"arn:aws:iam::ACCOUNT_ID:role/{worker_profile.rsplit('/', 1)[1]}"]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    # Ray tags every node it launches ray-cluster-name: the cluster's name
    (ending,) = [statement for statement in head if "ec2:TerminateInstances" in listed(statement["Action"])]
    assert ending["Condition"] == {"StringEquals": {"aws:ResourceTag/ray-cluster-name": load(AWS)["cluster_name"]}}


def test_the_head_launches_only_the_workers_instance_type_and_both_list_only_the_runs_prefix():
    config = load(AWS)
    workers = {t["node_config"]["InstanceType"] for n, t in config["available_node_types"].items() if n != "head"}
    head = statements("raybench-head-policy")
    launching = [s for s in head if "ec2:RunInstances" in listed(s["Action"]) and "instance/*" in str(s["Resource"])]
    assert launching
    for statement in launching:  # the autoscaler launches workers only: the head is `ray up`'s, with your credentials
        assert set(listed(statement["Condition"]["StringEquals"]["ec2:InstanceType"])) == workers
    for name in ("raybench-head-policy", "raybench-worker-policy"):
        objects = {r for s in statements(name) if "s3:GetObject" in listed(s["Action"]) for r in listed(s["Resource"])}
        (listing,) = [s for s in statements(name) if "s3:ListBucket" in listed(s["Action"])]
        prefixes = listed(listing["Condition"]["StringLike"]["s3:prefix"])
        assert prefixes  # listing only where the objects may be read
        assert {f"arn:aws:s3:::BUCKET/{prefix.rstrip('*').rstrip('/')}/*" for prefix in prefixes} <= objects


def test_the_workers_may_use_only_the_runs_prefix():
    for statement in statements("raybench-worker-policy"):
        assert all(action.startswith("s3:") for action in listed(statement["Action"]))
        assert set(listed(statement["Resource"])) <= {"arn:aws:s3:::BUCKET/raybench/*", "arn:aws:s3:::BUCKET"}


# ------------------------------------------------------------------------------- a real two-node cluster

# Two trials of equal length, one CPU each: on two one-CPU nodes, one runs on each.
GRID = {
    "name": "cluster",
    "seeds": [0, 1],
    "options": {"image_size": 32, "max_epochs": 8, "es_start": 1, "es_patience": 8, "es_min_delta": 0.0},
    "sweeps": [{"models": ["mobilenet_small"], "tiers": ["tiny"]}],
}
EPOCHS = GRID["options"]["max_epochs"]


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of two nodes on this machine (a head and a worker, separate raylets, 1 CPU each)."""
    # a short private temp folder: Ray's socket paths must fit in 107 bytes, and its address file
    # (ray_current_cluster) must not lead another Ray on this machine to join this cluster
    temp = tempfile.mkdtemp(prefix="rbc-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    nodes = None
    try:
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
        yield nodes
    finally:
        if nodes is not None:
            nodes.shutdown()  # this cluster's processes only (`ray stop` would stop every Ray on the machine)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cluster")
    (work / "grid.py").write_text(f"GRID = {GRID!r}\n")
    return work


def driver(cluster, work: Path, name: str, **popen) -> subprocess.Popen:
    """`python -m raybench.run` joining the cluster, with storage every node can reach (one machine: a folder)."""
    cmd = [
        sys.executable,
        "-m",
        "raybench.run",
        str(work / "grid.py"),
        "--name",
        name,
        "--address",
        cluster.address,
        "--storage",
        str(work / "storage"),
        "--results",
        str(work / "results"),
        "--cache",
        str(work / "cache"),
        "--checkpoint-every",
        "0",
    ]
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, text=True, **popen)


def stop(run: subprocess.Popen) -> None:
    if run.poll() is None:
        run.kill()
        run.wait()


def checkpointed(storage: Path, pattern: str) -> bool:
    """Whether both trials have a checkpoint whose folder name matches `pattern`."""
    trials = list(storage.glob("mobilenet_small-*"))
    return len(trials) == 2 and all(any(trial.glob(pattern)) for trial in trials)


def read(results: Path) -> dict[str, pd.DataFrame]:
    frames = {name: pd.read_parquet(results / f"{name}.parquet") for name in ("trials", "epochs", "predictions")}
    frames["trials"] = frames["trials"].sort_values("trial_id", ignore_index=True)
    frames["epochs"] = frames["epochs"].sort_values(["trial_id", "epoch"], ignore_index=True)
    frames["predictions"] = frames["predictions"].sort_values(["trial_id", "image"], ignore_index=True)
    return frames


@pytest.fixture(scope="module")
def undisturbed(cluster, work) -> dict[str, pd.DataFrame]:
    run = driver(cluster, work, "whole", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = run.communicate(timeout=300)
    finally:
        stop(run)
    assert run.returncode == 0, output[-5000:]
    return read(work / "results" / "whole")


def node_ids(cluster) -> tuple[str, str]:
    (worker,) = cluster.worker_nodes
    return cluster.head_node.node_id, worker.node_id


@pytest.mark.slow
def test_a_grid_on_a_two_node_cluster_runs_trials_on_both_nodes(cluster, work, undisturbed):
    trials, epochs = undisturbed["trials"], undisturbed["epochs"]
    assert (trials.status == "ok").all() and len(trials) == 2
    assert set(trials.node) == set(node_ids(cluster))
    for trial in trials.itertuples():
        rows = epochs[epochs.trial_id == trial.trial_id]
        assert list(rows.epoch) == list(range(1, EPOCHS + 1)) and set(rows.node) == {trial.node}
    # the result tables are also on the shared storage, next to Ray's experiment (s3://... on AWS)
    shared = read(work / "storage" / "whole" / "results")
    for name, frame in undisturbed.items():
        pd.testing.assert_frame_equal(shared[name], frame)


@pytest.mark.slow
def test_a_node_lost_mid_trial_costs_only_time(cluster, work, undisturbed):
    head, worker = node_ids(cluster)
    log = work / "cut.log"
    with open(log, "w") as out:
        run = driver(cluster, work, "cut", stdout=out, stderr=subprocess.STDOUT)
    try:
        # both trials, so the worker's too, have checkpointed epoch 3 (checkpoint_000002) to 7, not finished
        deadline = time.time() + 180
        while not checkpointed(work / "storage" / "cut", "checkpoint_00000[2-6]"):
            assert run.poll() is None and time.time() < deadline, log.read_text()[-5000:]
            time.sleep(0.1)
        (worker_node,) = cluster.worker_nodes
        cluster.remove_node(worker_node, allow_graceful=False)  # SIGKILL: its raylet, its trial, all on it
        assert run.wait(timeout=300) == 0, log.read_text()[-5000:]
    finally:
        stop(run)
    cut, whole = read(work / "results" / "cut"), undisturbed

    assert (cut["trials"].status == "ok").all() and set(cut["trials"].node) == {head}
    moved = cut["epochs"][cut["epochs"].node == worker].trial_id.unique()
    assert len(moved) == 1, "exactly the trial on the lost node has epochs there"
    for trial_id, rows in cut["epochs"].groupby("trial_id"):
        assert list(rows.epoch) == list(range(1, EPOCHS + 1))  # every epoch exactly once
        if trial_id == moved[0]:
            # it went on from its last checkpoint on the head: a prefix of its epochs ran on the worker, the
            # rest (at least one) after the kill on the surviving node. The prefix is 2 epochs or more: epoch 3's
            # checkpoint was on the storage, but the driver may not have registered it before the node died.
            on_worker = int((rows.node == worker).sum())
            assert 2 <= on_worker < EPOCHS and list(rows.node) == [worker] * on_worker + [head] * (EPOCHS - on_worker)
        else:
            assert set(rows.node) == {head}
    # the numbers of an undisturbed run with the same seeds
    where_and_when = ["node", "epoch_seconds", "started_at", "ended_at", "host"]
    cut_epochs, whole_epochs = cut["epochs"].drop(columns=where_and_when), whole["epochs"].drop(columns=where_and_when)
    pd.testing.assert_frame_equal(cut_epochs, whole_epochs)
    numbers = [
        "trial_id",
        "epochs",
        "tested_epoch",
        "tested_val_loss",
        "test_accuracy",
        "map_at_5",
        "map_at_100",
        "confusion_matrix",
    ]
    pd.testing.assert_frame_equal(cut["trials"][numbers], whole["trials"][numbers])
    pd.testing.assert_frame_equal(cut["predictions"], whole["predictions"])
