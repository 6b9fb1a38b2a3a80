"""deploy/ without a cloud: the validators pass the templates, units and scripts (and fail broken copies),
the three commands' dry runs print what they would run, and provision.sh builds a real instance under a
throwaway root that serves POST /predict through nginx.

The tools come from scripts/install_deploy_tools.sh (packer, shellcheck and systemd-analyze from the
distribution; cfn-lint and checkov in .venv/deploy-tools). A test skips only when its tool is absent.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from api.settings import Settings
from bench.harness import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
IMAGE = DEPLOY / "image"
TEMPLATE = DEPLOY / "cloudformation" / "serving.yaml"
WORKERS_TEMPLATE = DEPLOY / "cloudformation" / "workers.yaml"
DEPLOY_VENV_BIN = REPO / ".venv" / "deploy-tools" / "bin"
SCRIPTS = [DEPLOY / "bake", DEPLOY / "rollout", DEPLOY / "loadtest", *sorted(IMAGE.glob("*.sh")),
           REPO / "scripts" / "install_deploy_tools.sh"]
# No credentials and no AWS config: the dry runs must not need them.
NO_AWS = {**os.environ, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
          "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": ""}


def tool(name: str) -> str:
    found = shutil.which(name) or (str(DEPLOY_VENV_BIN / name) if (DEPLOY_VENV_BIN / name).exists() else None)
    if not found:
        pytest.skip(f"{name} is not installed: run scripts/install_deploy_tools.sh")
    return found


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 120)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


# -- Packer ---------------------------------------------------------------------------------------
PACKER_VARS = ["-var", "app_version=test", "-var", "model_version=1", "-var", "model_store=/tmp",
               "-var", "source_dir=/tmp"]


def test_packer_template_validates_offline():
    # Full validation (schema of every builder field), not -syntax-only: it needs no AWS on Packer 1.6.6.
    result = run(tool("packer"), "validate", *PACKER_VARS, IMAGE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_packer_rejects_a_broken_template(tmp_path):
    for part in IMAGE.glob("*.pkr.hcl"):
        shutil.copy(part, tmp_path)
    source = tmp_path / "source.pkr.hcl"
    source.write_text(source.read_text().replace("instance_type   = var.instance_type", "instance_typo = var.instance_type"))
    result = run(tool("packer"), "validate", *PACKER_VARS, tmp_path)
    assert result.returncode != 0
    assert "instance_typo" in result.stdout + result.stderr


def test_packer_template_needs_its_version_variables():
    result = run(tool("packer"), "validate", "-var", "model_store=/tmp", "-var", "source_dir=/tmp", IMAGE)
    assert result.returncode != 0  # app_version and model_version have no defaults: an image always says both


# -- CloudFormation -------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, ...) as {"Ref": ...}-style mappings."""


def _construct_tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


@pytest.fixture(scope="module")
def cfn():
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def test_cloudformation_template_passes_cfn_lint():
    result = run(tool("cfn-lint"), TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_rejects_a_broken_template(tmp_path):
    broken = tmp_path / "serving.yaml"
    broken.write_text(TEMPLATE.read_text().replace("HttpTokens: required", "HttpTokens: sometimes"))
    result = run(tool("cfn-lint"), broken)
    assert result.returncode != 0 and "sometimes" in result.stdout


def _checkov(path: Path) -> dict:
    result = run(tool("checkov"), "-f", path, "--skip-download", "-o", "json", env={**NO_AWS, "BC_SKIP_MAPPING": "TRUE"})
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return json.loads(result.stdout)["results"]


def test_checkov_finds_no_failed_check_and_every_skip_is_justified(cfn):
    results = _checkov(TEMPLATE)
    assert results["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert results["passed_checks"]
    for skip in (s for r in cfn["Resources"].values() for s in r.get("Metadata", {}).get("checkov", {}).get("skip", [])):
        assert len(skip.get("comment", "")) > 20, f"checkov skip {skip['id']} has no reason"


def test_checkov_fails_a_template_that_keeps_invalid_headers(tmp_path):
    insecure = tmp_path / "serving.yaml"
    insecure.write_text(TEMPLATE.read_text().replace(
        "{Key: routing.http.drop_invalid_header_fields.enabled, Value: \"true\"}",
        "{Key: routing.http.drop_invalid_header_fields.enabled, Value: \"false\"}"))
    failed = {c["check_id"] for c in _checkov(insecure)["failed_checks"]}
    assert "CKV_AWS_131" in failed


def _default(cfn, name):
    return cfn["Parameters"][name]["Default"]


def _attributes(resource, key):
    return {a["Key"]: a["Value"] for a in resource["Properties"][key] if isinstance(a, dict) and "Key" in a}


def test_timeouts_match_the_servers_settings(cfn):
    settings = Settings()
    resources = cfn["Resources"]
    idle = int(_attributes(resources["LoadBalancer"], "LoadBalancerAttributes")["idle_timeout.timeout_seconds"])
    assert idle == settings.load_balancer_idle_timeout < settings.client_keepalive, \
        "the load balancer must close idle connections before nginx does"
    drain = _default(cfn, "DrainSeconds")
    assert settings.request_timeout <= drain < 300, "drain long enough for a request, shorter than AWS's 300 s"
    assert _attributes(resources["TargetGroup"], "TargetGroupAttributes")["deregistration_delay.timeout_seconds"] == \
        {"Ref": "DrainSeconds"}
    assert _default(cfn, "ServingPort") == settings.port
    # A new instance waits for /ready, then up to 5 minutes for the target group: both within PT30M.
    assert _default(cfn, "ReadyTimeoutSeconds") + 5 * 60 < 30 * 60
    assert resources["ServingGroup"]["UpdatePolicy"]["AutoScalingRollingUpdate"]["PauseTime"] == "PT30M"


def test_rollout_keeps_capacity_and_waits_for_ready_instances(cfn):
    group = cfn["Resources"]["ServingGroup"]
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["WaitOnResourceSignals"] is True
    assert rolling["MinInstancesInService"] == {"Ref": "MinInstancesInService"}  # rollout sets it to desired
    assert group["CreationPolicy"]["ResourceSignal"]["Count"] == {"Ref": "MinSize"}
    assert group["Properties"]["HealthCheckType"] == "ELB"
    assert "DesiredCapacity" not in group["Properties"]
    assert cfn["Resources"]["TargetGroup"]["Properties"]["HealthCheckPath"] == "/ready"
    user_data = cfn["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert user_data.index("wait-ready.sh") < user_data.index("describe-target-health") < user_data.index("signal 0")


def test_instances_take_traffic_only_from_the_load_balancer(cfn):
    resources = cfn["Resources"]
    ingress = resources["InstanceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [rule.get("SourceSecurityGroupId") for rule in ingress] == [{"Ref": "LoadBalancerSecurityGroup"}]
    data = resources["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert "KeyName" not in data
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"])


def test_gpu_scaling_reads_the_metric_the_agent_publishes(cfn):
    agent = json.loads((IMAGE / "files" / "cloudwatch-agent.json").read_text())
    spec = cfn["Resources"]["GpuScaling"]["Properties"]["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
    assert spec["Namespace"] == agent["metrics"]["namespace"]
    assert spec["MetricName"].removeprefix("nvidia_smi_") in agent["metrics"]["metrics_collected"]["nvidia_gpu"]["measurement"]
    assert ["AutoScalingGroupName"] in agent["metrics"]["aggregation_dimensions"]
    assert [d["Name"] for d in spec["Dimensions"]] == ["AutoScalingGroupName"]


# -- the queue workers' stack (workers.yaml) --------------------------------------------------------
@pytest.fixture(scope="module")
def workers_cfn():
    return yaml.load(WORKERS_TEMPLATE.read_text(), Loader=_CfnLoader)


def test_workers_template_passes_cfn_lint_and_checkov(workers_cfn):
    result = run(tool("cfn-lint"), WORKERS_TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    results = _checkov(WORKERS_TEMPLATE)
    assert results["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert results["passed_checks"]
    for resource in workers_cfn["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 20, f"checkov skip {skip['id']} has no reason"


def _worker_env(workers_cfn) -> dict:
    """The user data's worker.env, as cloud-init writes it (the ${...} filled with stand-ins)."""
    user_data = workers_cfn["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    text = re.sub(r"\$\{([A-Za-z0-9:]+)\}", "filled", user_data["Fn::Base64"]["Fn::Sub"])
    assert text.startswith("#cloud-config\n")
    files = {f["path"]: f for f in yaml.safe_load(text)["write_files"]}
    env = files["/etc/keras-serving/worker.env"]
    assert env["permissions"] == "0640" and env["owner"] == "root:keras-serving"
    assert "TimeoutStopSec=" in files["/etc/systemd/system/keras-serving-worker.service.d/stop.conf"]["content"]
    return dict(line.split("=", 1) for line in env["content"].splitlines() if line and not line.startswith("#"))


def test_worker_user_data_sets_the_queue_settings_the_app_reads(workers_cfn):
    env = _worker_env(workers_cfn)
    for name in env:
        assert name == "AWS_DEFAULT_REGION" or name[6:].lower() in Settings.model_fields, name
    assert env["SERVE_QUEUE_BACKEND"] == "'sqs'"
    # The worker protects its instance in the group its own IAM policy names (api/queue/protection.py).
    user_data = workers_cfn["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    group = workers_cfn["Resources"]["WorkerGroup"]["Properties"]["AutoScalingGroupName"]["Fn::Sub"]
    assert f"SERVE_QUEUE_AUTOSCALING_GROUP='{group}'" in user_data["Fn::Base64"]["Fn::Sub"]
    role = workers_cfn["Resources"]["WorkerRole"]["Properties"]["Policies"]
    protect = next(s for p in role for s in p["PolicyDocument"]["Statement"] if s["Action"] == "autoscaling:SetInstanceProtection")
    assert protect["Resource"]["Fn::Sub"].endswith(f"autoScalingGroupName/{group}")


def test_dead_letters_after_one_more_receive_than_the_worker_allows(workers_cfn):
    queue = workers_cfn["Resources"]["JobQueue"]["Properties"]
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": "DeadLetterQueue.Arn"}
    assert redrive["maxReceiveCount"] == {"Fn::FindInMap": ["Redrive", {"Ref": "MaxDeliveries"}, "MaxReceiveCount"]}
    mapping = workers_cfn["Mappings"]["Redrive"]
    assert set(mapping) == set(workers_cfn["Parameters"]["MaxDeliveries"]["AllowedValues"])
    assert all(v["MaxReceiveCount"] == int(k) + 1 for k, v in mapping.items())
    assert _worker_env(workers_cfn)["SERVE_QUEUE_MAX_DELIVERIES"] == "'filled'"  # ${MaxDeliveries}
    # Results expire: the bucket's lifecycle covers the prefix the app writes under.
    rules = workers_cfn["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r.get("Prefix") == Settings().queue_s3_prefix and "ExpirationInDays" in r for r in rules)


def test_workers_scale_on_backlog_per_worker_and_start_from_zero(workers_cfn):
    resources = workers_cfn["Resources"]
    group = resources["WorkerGroup"]["Properties"]
    assert group["MinSize"] == 0 and "DesiredCapacity" not in group and group["MetricsCollection"]
    tracking = resources["BacklogScaling"]["Properties"]["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
    metrics = {m["Id"]: m for m in tracking["Metrics"]}
    assert [m["Id"] for m in tracking["Metrics"] if m.get("ReturnData")] == ["backlog"]
    assert metrics["backlog"]["Expression"] == "visible / inservice"
    assert metrics["visible"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert metrics["inservice"]["MetricStat"]["Metric"]["MetricName"] == "GroupInServiceInstances"
    # backlog / 0 has no value: an alarm on "jobs wait, no worker" drives a step policy to start one.
    alarm = resources["FirstWorkerAlarm"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": "FirstWorkerScaling"}]
    start = next(m for m in alarm["Metrics"] if m.get("ReturnData"))["Expression"]
    assert "visible > 0" in start and "FILL(inservice, 0) == 0" in start
    step = resources["FirstWorkerScaling"]["Properties"]
    assert step["PolicyType"] == "StepScaling" and step["StepAdjustments"][0]["ScalingAdjustment"] == 1


def test_worker_role_is_least_privilege(workers_cfn):
    statements = [s for p in workers_cfn["Resources"]["WorkerRole"]["Properties"]["Policies"]
                  for s in p["PolicyDocument"]["Statement"]]
    for statement in statements:
        assert statement["Resource"] != "*" and "*" not in str(statement["Action"])
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "sqs:SendMessage" in actions  # to the dead-letter queue only:
    send = [s for s in statements if "sqs:SendMessage" in s["Action"]]
    assert [s["Resource"] for s in send] == [{"Fn::GetAtt": "DeadLetterQueue.Arn"}]
    assert not actions & {"s3:DeleteObject", "sqs:PurgeQueue", "sqs:DeleteQueue"}


# -- shell ----------------------------------------------------------------------------------------
def test_shellcheck_passes_every_deploy_script(tmp_path, cfn):
    user_data = cfn["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    boot = tmp_path / "user-data.sh"
    boot.write_text(re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: m.group(1).replace("::", "-").lower(), user_data))
    result = run(tool("shellcheck"), *SCRIPTS, boot)
    assert result.returncode == 0, result.stdout


def test_shellcheck_rejects_a_broken_script(tmp_path):
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert run(tool("shellcheck"), broken).returncode != 0


# -- the three commands ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["bake", "rollout", "loadtest"])
def test_every_command_has_help(command):
    result = run(DEPLOY / command, "--help", env=NO_AWS)
    assert result.returncode == 0 and "Usage:" in result.stdout and "--dry-run" in result.stdout


def test_bake_dry_run_prints_the_packer_build(tmp_path):
    (tmp_path / "digits" / "3").mkdir(parents=True)
    result = run(DEPLOY / "bake", "--model-store", tmp_path, "--model-version", "3", "--app-version", "v9",
                 "--dry-run", env=NO_AWS)
    assert result.returncode == 0, result.stderr
    assert "+ git -C" in result.stdout and "archive" in result.stdout
    build = next(line for line in result.stdout.splitlines() if line.startswith("+ packer build"))
    assert "app_version=v9" in build and "model_version=3" in build and f"model_store={tmp_path}" in build


def test_bake_refuses_a_model_version_the_store_lacks(tmp_path):
    result = run(DEPLOY / "bake", "--model-store", tmp_path, "--model-version", "3", "--dry-run", env=NO_AWS)
    assert result.returncode != 0 and "digits/3" in result.stderr


def test_bake_reads_the_image_id_of_the_manifests_last_run(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"last_run_uuid": "b", "builds": [
        {"packer_run_uuid": "a", "artifact_id": "us-east-1:ami-000000000000000aa"},
        {"packer_run_uuid": "b", "artifact_id": "us-east-1:ami-000000000000000bb"},
        {"packer_run_uuid": "c", "artifact_id": "us-east-1:ami-000000000000000cc"}]}))
    result = run(DEPLOY / "bake", "--last-image-id", "--manifest", manifest)
    assert result.stdout.strip() == "ami-000000000000000bb"


def test_rollout_dry_run_deploys_the_image_with_capacity_kept():
    result = run(DEPLOY / "rollout", "--stack", "serving", "--image-id", "ami-0123456789abcdef0",
                 "--param", "MaxSize=8", "--dry-run", env=NO_AWS)
    assert result.returncode == 0, result.stderr
    deploy = next(line for line in result.stdout.splitlines() if "cloudformation deploy" in line)
    assert "ImageId=ami-0123456789abcdef0" in deploy and "MinInstancesInService=" in deploy
    assert "MaxSize=8" in deploy and "CAPABILITY_IAM" in deploy
    assert "describe-auto-scaling-groups" in result.stderr  # where the desired capacity comes from
    assert "describe-stack-events" in result.stdout


def test_loadtest_dry_run_hands_over_to_make():
    result = run(DEPLOY / "loadtest", "https://serving.example.com", "--dry-run", "--", "USERS=16", env=NO_AWS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"+ make -C {REPO} loadtest URL=https://serving.example.com USERS=16"


def test_loadtest_needs_a_url_or_a_stack():
    assert run(DEPLOY / "loadtest", "--dry-run", env=NO_AWS).returncode == 2


# -- provisioning, for real, under a throwaway root -------------------------------------------------
def _provision(root: Path, store: Path, port: int, status_port: int, **extra) -> subprocess.CompletedProcess:
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    args = ["--root", root, "--cpu", "--user", user, "--port", port, "--status-port", status_port,
            "--app-version", extra.get("app_version", "test-1"), "--model-version", extra.get("model_version", "1"),
            "--model-store", store, "--python", sys.executable,
            # The release venv is layered over this one: pip still resolves requirements.txt against it.
            "--reuse-site-packages", next((REPO / ".venv" / "lib").glob("python3*/site-packages")),
            "--setting", "SERVE_HOST=127.0.0.1", "--setting", "SERVE_WORKERS=1",
            "--setting", "SERVE_WARMUP_BATCHES=[1]",
            # The nightly job's units too (deploy/systemd/install.sh), so validate.sh verifies them.
            "--batch-input", "/srv/exports/*.csv", "--batch-output", "/srv/predictions", *extra.get("more", [])]
    return run(IMAGE / "provision.sh", *args, timeout=300)


@pytest.fixture(scope="module")
def instance(store, tmp_path_factory):
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed: make system-deps")
    root = tmp_path_factory.mktemp("instance")
    ports = (free_port(), free_port())
    result = _provision(root, store, *ports)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, store, ports


def test_provisioned_tree_passes_its_own_validation(instance):
    root, _, _ = instance
    tool("systemd-analyze")
    result = run(IMAGE / "validate.sh", "--root", root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "systemd units verify (5 units)" in result.stdout  # server, worker, GPU check, nightly job and timer


def test_units_stop_gracefully_within_the_settings_timeouts(instance):
    root, _, _ = instance
    unit = (root / "etc/systemd/system/keras-serving.service").read_text()
    settings = Settings()
    assert "KillSignal=SIGTERM" in unit and "KillMode=mixed" in unit
    # systemd outwaits the drain (/ready 503, still serving) and then gunicorn's graceful stop
    assert int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1)) > settings.drain_seconds + settings.graceful_timeout
    nginx = (root / "etc/systemd/system/nginx.service.d/keras-serving.conf").read_text()
    drain = int(re.search(r"QUIT/(\d+)", nginx).group(1))
    assert drain > settings.request_timeout and f"TimeoutStopSec={drain}" in nginx
    assert not (root / "etc/systemd/system/keras-serving.service.d/gpu.conf").exists()  # --cpu: no GPU required
    assert (root / "etc/systemd/system/multi-user.target.wants/keras-serving.service").is_symlink()
    # The queue worker: SIGTERM drains the jobs it holds, each renewed for at most queue_max_job_seconds.
    worker = (root / "etc/systemd/system/keras-serving-worker.service").read_text()
    assert "KillSignal=SIGTERM" in worker and "EnvironmentFile=" + str(root / "etc/keras-serving/env") in worker
    assert int(re.search(r"^TimeoutStopSec=(\d+)", worker, re.M).group(1)) > settings.queue_max_job_seconds
    assert (root / "etc/systemd/system/multi-user.target.wants/keras-serving-worker.service").is_symlink()


def test_one_image_two_roles_chosen_by_worker_env(instance):
    """Both roles' units are enabled; worker.env (written by the worker group's user data, or --role worker)
    starts the worker and keeps the HTTP stack (gunicorn and nginx) down, its absence the reverse."""
    root, store, ports = instance
    units, worker_env = root / "etc/systemd/system", root / "etc/keras-serving/worker.env"
    condition = f"ConditionPathExists={worker_env}"
    assert condition in (units / "keras-serving-worker.service").read_text()
    for drop_in in ("keras-serving.service.d/role.conf", "nginx.service.d/keras-serving-role.conf"):
        assert f"ConditionPathExists=!{worker_env}" in (units / drop_in).read_text()
    assert not worker_env.exists()  # the default image is a server until its boot says otherwise
    try:
        result = _provision(root, store, *ports, more=["--role", "worker"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert worker_env.exists() and "role: worker" in result.stdout
        # worker.env is a systemd environment file: only comments and SERVE_ names the settings know
        names = [line.split("=")[0] for line in worker_env.read_text().splitlines() if line and not line.startswith("#")]
        assert all(name[6:].lower() in Settings.model_fields for name in names)
    finally:
        worker_env.unlink(missing_ok=True)


def test_nightly_batch_job_is_installed_from_the_release(instance):
    root, _, _ = instance
    units = root / "etc/systemd/system"
    assert (root / "opt/keras-serving/current/deploy/systemd/install.sh").exists()
    assert (units / "timers.target.wants/keras-serving-predict-files.timer").is_symlink()
    service = (units / "keras-serving-predict-files.service").read_text()
    assert f"ReadWritePaths={root}/srv/predictions" in service
    # Its ExecStart runs the release's own keras-serving command: provision.sh makes it.
    launcher = root / "opt/keras-serving/current/.venv/bin/keras-serving"
    assert f"{launcher} predict-files" in service.replace("@ROOT@", str(root))
    result = run(launcher, "predict-files", "--help")
    assert result.returncode == 0 and "predict-files" in result.stdout


def test_validation_catches_a_unit_systemd_would_half_ignore(instance):
    root, _, _ = instance
    tool("systemd-analyze")
    unit = root / "etc/systemd/system/keras-serving.service"
    good = unit.read_text()
    try:
        unit.write_text(good.replace("KillSignal=SIGTERM", "KillSignal=SIGTERN"))  # systemd warns, exits 0
        result = run(IMAGE / "validate.sh", "--root", root)
        assert result.returncode != 0 and "SIGTERN" in result.stderr
    finally:
        unit.write_text(good)


def test_provisioning_again_is_a_no_op_that_succeeds(instance):
    root, store, ports = instance
    before = (root / "etc/keras-serving/env").read_text()
    result = _provision(root, store, *ports)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "etc/keras-serving/env").read_text() == before
    assert os.readlink(root / "opt/keras-serving/current") == "releases/test-1"


def test_provisioning_refuses_a_model_version_the_store_lacks(instance, tmp_path):
    _, store, ports = instance
    result = _provision(tmp_path / "root", store, *ports, model_version="99")
    assert result.returncode != 0 and "digits version 99" in result.stderr
    assert not (tmp_path / "root" / "opt").exists()


def _exec_start(unit: str) -> tuple[list[str], Path, dict]:
    """The unit's command, working directory and environment, as systemd would run them."""
    fields = dict(re.findall(r"^(ExecStart|WorkingDirectory|EnvironmentFile)=(.*)$", unit, re.M))
    env = dict(os.environ)
    for line in Path(fields["EnvironmentFile"]).read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            env[name] = value.strip("'")
    return fields["ExecStart"].split(), Path(fields["WorkingDirectory"]), env


def test_provisioned_instance_serves_predict_through_nginx(instance, digits):
    root, _, (port, _) = instance
    # No systemd as PID 1 here: run the installed unit's ExecStart as systemd would, and nginx with the
    # tree's main config (the distribution's nginx.conf stands in for it on an instance).
    command, workdir, env = _exec_start((root / "etc/systemd/system/keras-serving.service").read_text())
    log = root / "var/log/keras-serving/gunicorn.log"  # where the unit's StandardOutput/StandardError append
    with open(log, "ab") as out:
        gunicorn = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=out)
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", root / "etc/nginx/nginx.conf",
                                  "-g", "daemon off;"], stdout=out, stderr=out)
    try:
        ready = run(root / "opt/keras-serving/current/deploy/image/wait-ready.sh",
                    f"http://127.0.0.1:{port}/ready", 90)
        assert ready.returncode == 0, ready.stderr + log.read_text()[-3000:]
        x, y = digits
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"instances": x[:8].tolist()}, timeout=10)
        assert answer.status_code == 200, answer.text
        predicted = [max(range(10), key=p.__getitem__) for p in answer.json()["predictions"]]
        assert sum(int(a == b) for a, b in zip(predicted, y[:8])) >= 7
        access_log = root / "var/log/nginx/keras-serving.access.log"
        # nginx writes a request's line after its answer's last byte
        wait_until(lambda: '"/predict"' in access_log.read_text(), 5, "nginx's access line for /predict")
        assert access_log.read_text().count('"/predict"') == 1
    finally:
        nginx.send_signal(signal.SIGQUIT)
        gunicorn.send_signal(signal.SIGTERM)
        for process in (nginx, gunicorn):
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert gunicorn.returncode == 0


def test_wait_ready_gives_up_on_a_dead_address():
    started = time.monotonic()
    result = run(IMAGE / "wait-ready.sh", f"http://127.0.0.1:{free_port()}/ready", 3)
    assert result.returncode == 1 and "not ready" in result.stderr
    assert time.monotonic() - started < 15
