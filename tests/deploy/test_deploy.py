"""deploy/ and the Dockerfile, checked against the real schemas: every Dagster configuration through
Dagster's own config schemas (the instance, dagster-k8s' run launcher, the run coordinator, dagster-celery's
executor, the workspace), every Kubernetes manifest through the kubernetes client's models (a field they do
not know is a typo), every command through the CLI that will parse it. No cluster, engine or broker is
needed: a typo fails here rather than at deploy time."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import dagster as dg
import pytest
import yaml
from dagster._cli import cli as dagster_cli
from dagster._config import convert_potential_field, validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA
from dagster._daemon.cli import cli as daemon_cli
from dagster_celery import celery_executor
from dagster_k8s import K8sRunLauncher
from dagster_postgres import DagsterPostgresStorage
from dagster_webserver.cli import cli as webserver_cli
from kubernetes.client import ApiClient

from everreach_data import cli
from everreach_data.config import PROJECT_ROOT, Settings
from everreach_data.db.dagster_storage import EverReachDagsterStorage
from everreach_data.inbox.defs import QUEUE_TAG as WEBHOOK_QUEUE
from everreach_data.outbound.defs import QUEUE_TAG as OUTBOUND_QUEUE

DEPLOY = PROJECT_ROOT / "deploy"
K8S_MODELS = {("v1", "Secret"): "V1Secret", ("apps/v1", "Deployment"): "V1Deployment", ("v1", "Service"): "V1Service",
              ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
              ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget", ("batch/v1", "Job"): "V1Job"}
#: Settings the deployment passes that are not the app's: Dagster's storage URL (read by config.py too),
#: the proxy's host name, the Celery variant's broker.
DEPLOYMENT_SETTINGS = {"PUBLIC_HOST", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def ok(schema: Any, value: Any) -> None:
    """``value`` is valid for a Dagster config schema (a ConfigType, a Field dict or a configurable class's
    ``config_type()``), or the test fails with Dagster's own error messages."""
    result = validate_config(convert_potential_field(schema).config_type, value)
    assert result.success, [e.message for e in result.errors]


# ───────────────────────────── Kubernetes ─────────────────────────────

class _Response:
    def __init__(self, doc: dict) -> None:
        self.data = json.dumps(doc)


def k8s_model(doc: dict) -> Any:
    """The manifest as the kubernetes client's model, which must give back exactly the manifest: a key the
    model does not know (a typo) is dropped by the client, so it shows up here as a difference."""
    api = ApiClient()
    model = api.deserialize(_Response(doc), K8S_MODELS[doc["apiVersion"], doc["kind"]])
    assert api.sanitize_for_serialization(model) == doc
    return model


def k8s_part(doc: dict, model: str) -> Any:
    api = ApiClient()
    value = api.deserialize(_Response(doc), model)
    assert api.sanitize_for_serialization(value) == doc
    return value


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], Any]:
    parsed: dict[tuple[str, str], Any] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in documents(path):
            parsed[doc["kind"], doc["metadata"]["name"]] = k8s_model(doc)
    return parsed


def test_the_kubernetes_model_check_catches_a_typo():
    doc = documents(DEPLOY / "kubernetes" / "receiver.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/healthz"}}
    with pytest.raises(AssertionError):
        k8s_model(doc)


def test_every_manifest_is_a_valid_kubernetes_object(manifests):
    assert set(manifests) == {("Secret", "everreach-secrets"), ("Secret", "everreach-dagster-postgresql"),
                              ("Deployment", "everreach-receiver"), ("Service", "everreach-receiver"),
                              ("HorizontalPodAutoscaler", "everreach-receiver"),
                              ("PodDisruptionBudget", "everreach-receiver"), ("Job", "everreach-migrate")}


def test_the_receiver_deployment_probes_serves_and_scales_what_it_should(manifests):
    deployment = manifests["Deployment", "everreach-receiver"]
    pod = deployment.spec.template
    [container] = pod.spec.containers
    assert deployment.spec.selector.match_labels.items() <= pod.metadata.labels.items()
    args = cli.build_parser().parse_args(container.command[1:])
    assert container.command[0] == "everreach-data" and args.func is cli.cmd_serve
    ports = {p.name: p.container_port for p in container.ports}
    assert ports == {"http": args.port}
    routes = {route.path for route in _receiver_routes()}
    assert container.readiness_probe.http_get.path == "/healthz"  # the database round trip
    assert container.liveness_probe.http_get.path in routes and container.liveness_probe.http_get.path != "/healthz"
    for probe in (container.readiness_probe, container.liveness_probe, container.startup_probe):
        assert probe.http_get.port in ports
    assert container.resources.requests["cpu"] and container.resources.requests["memory"]
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == _image_uid()
    assert [s.secret_ref.name for s in container.env_from] == ["everreach-secrets"]
    assert not [e for e in container.env or [] if e.name in Settings.model_fields and Settings.is_secret(e.name)]

    service = manifests["Service", "everreach-receiver"]
    assert service.spec.selector.items() <= pod.metadata.labels.items()
    assert {p.target_port for p in service.spec.ports} <= set(ports)
    hpa = manifests["HorizontalPodAutoscaler", "everreach-receiver"]
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("Deployment", "everreach-receiver")
    assert hpa.spec.min_replicas >= 2
    pdb = manifests["PodDisruptionBudget", "everreach-receiver"]
    assert pdb.spec.selector.match_labels.items() <= pod.metadata.labels.items()
    assert pdb.spec.min_available < hpa.spec.min_replicas  # a node can always be drained


def test_the_migration_job_migrates_with_the_receivers_image_and_secret(manifests):
    [container] = manifests["Job", "everreach-migrate"].spec.template.spec.containers
    [receiver] = manifests["Deployment", "everreach-receiver"].spec.template.spec.containers
    assert cli.build_parser().parse_args(container.command[1:]).func is cli.cmd_migrate
    assert container.image == receiver.image and container.env_from == receiver.env_from


def test_the_secret_holds_every_secret_setting(manifests):
    names = set(manifests["Secret", "everreach-secrets"].string_data)
    assert not names - set(Settings.model_fields), f"not settings: {sorted(names - set(Settings.model_fields))}"
    secrets = {name for name in Settings.model_fields if Settings.is_secret(name)}
    assert secrets <= names, f"secret settings the Secret leaves out: {sorted(secrets - names)}"


def _receiver_routes() -> list:
    from everreach_data.receiver.app import create_app
    from everreach_sandbox.defaults import SANDBOX_DEFAULTS

    return create_app(Settings(**SANDBOX_DEFAULTS), "postgresql://unused").routes  # type: ignore[arg-type]


# ───────────────────────────── the image ─────────────────────────────

def _dockerfile() -> str:
    return (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")


def _image_uid() -> int:
    return int(re.search(r"^USER (\d+)", _dockerfile(), re.M).group(1))


def test_the_image_is_multi_stage_slim_and_runs_as_a_user_without_build_tools():
    text = _dockerfile()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    final = stages[-1]
    assert "build-essential" in stages[0] and not re.search(r"apt-get|build-essential|gcc", final)
    assert _image_uid() != 0 and f"useradd --uid {_image_uid()}" in final
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (PROJECT_ROOT / source).exists(), f"the Dockerfile copies {source}, which is not here"
    ignored = (PROJECT_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", ".everreach", "tests", "*.env"} <= set(ignored)
    cmd = json.loads(re.search(r"^CMD (.+)$", final, re.M).group(1))
    assert cmd[0] == "everreach-data" and cli.build_parser().parse_args(cmd[1:]).func is cli.cmd_serve


def test_the_image_installs_the_integrations_deploy_uses():
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deploy_extra = {re.split(r"[=<>]", r)[0] for r in project["optional-dependencies"]["deploy"]}
    assert {"dagster-k8s", "dagster-celery"} <= deploy_extra
    assert '".[deploy]"' in _dockerfile()


# ───────────────────────────── Dagster ─────────────────────────────

def _instance(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_dagster_yaml_is_a_valid_instance():
    instance = _instance(PROJECT_ROOT / "dagster.yaml")
    ok(dagster_instance_config_schema(), instance)
    ok(EverReachDagsterStorage.config_type(), instance["storage"]["custom"]["config"])
    ok(QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"])


def test_the_queue_jobs_concurrency_limits_name_their_tags():
    limits = _instance(PROJECT_ROOT / "dagster.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    by_tag = {(limit["key"], limit.get("value")): limit["limit"] for limit in limits}
    [(key, webhook)] = WEBHOOK_QUEUE.items()
    [(key2, outbound)] = OUTBOUND_QUEUE.items()
    assert by_tag[key, webhook] == 2 and by_tag[key2, outbound] == 1


@pytest.fixture(scope="module")
def values() -> dict:
    return _instance(DEPLOY / "helm" / "values.yaml")


def chart_instance(values: dict, namespace: str = "everreach") -> dict:
    """The dagster.yaml the chart renders from these values, for the parts they set (the chart's
    templates/helpers/instance/*.tpl: run launcher, run coordinator, run monitoring, Postgres storage)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher.get("runK8sConfig", {})
    snake = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
             "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
             "jobMetadata": "job_metadata"}
    assert set(run_k8s) <= set(snake), f"runK8sConfig keys the chart does not read: {set(run_k8s) - set(snake)}"
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    pg = values["postgresql"]
    return {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "load_incluster_config": launcher["loadInclusterConfig"],
            "job_namespace": launcher.get("jobNamespace") or namespace,
            "image_pull_policy": launcher["imagePullPolicy"],
            "service_account_name": "everreach-dagster",
            "dagster_home": values["global"]["dagsterHome"],
            "instance_config_map": "everreach-dagster-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "env_secrets": [s["name"] for s in launcher.get("envSecrets", [])],
            "run_k8s_config": {snake[k]: v for k, v in run_k8s.items()},
        }},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator", "config": {
            "max_concurrent_runs": queued["maxConcurrentRuns"],
            "tag_concurrency_limits": queued["tagConcurrencyLimits"],
        }},
        "run_monitoring": {"enabled": monitoring["enabled"],
                           "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
                           "poll_interval_seconds": monitoring["pollIntervalSeconds"]},
        "storage": {"postgres": {"postgres_db": {
            "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
            "params": pg["postgresqlParams"]}}},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_the_helm_values_render_a_valid_dagster_instance(values):
    instance = chart_instance(values)
    ok(dagster_instance_config_schema(), instance)
    ok(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    ok(QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"])
    ok(DagsterPostgresStorage.config_type(), instance["storage"]["postgres"])


def test_the_dagster_config_check_catches_a_typo(values):
    instance = chart_instance(values)
    instance["run_coordinator"]["config"]["tag_concurency_limits"] = []
    with pytest.raises(AssertionError):
        ok(QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"])


def test_the_helm_values_match_dagster_yaml_and_the_manifests(values, manifests):
    ours = _instance(PROJECT_ROOT / "dagster.yaml")
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["tagConcurrencyLimits"] == ours["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert queued["maxConcurrentRuns"] == ours["run_coordinator"]["config"]["max_concurrent_runs"]
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] == ours["run_monitoring"]["enabled"]
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    password_secret = manifests["Secret", values["global"]["postgresqlSecretName"]]
    assert set(password_secret.string_data) == {"postgresql-password"}

    [deployment] = values["dagster-user-deployments"]["deployments"]
    receiver_image = manifests["Deployment", "everreach-receiver"].spec.template.spec.containers[0].image
    for image in (deployment["image"], values["dagsterWebserver"]["image"], values["dagsterDaemon"]["image"]):
        assert f"{image['repository']}:{image['tag']}" == receiver_image  # one image for every role
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for secrets in (deployment["envSecrets"], values["dagsterWebserver"]["envSecrets"],
                    values["dagsterDaemon"]["envSecrets"], launcher["envSecrets"]):
        assert [k8s_part(s, "V1SecretEnvSource").name for s in secrets] == ["everreach-secrets"]
    for part in (deployment, values["dagsterWebserver"], values["dagsterDaemon"]):
        k8s_part(part["resources"], "V1ResourceRequirements")
    k8s_part(launcher["runK8sConfig"]["containerConfig"]["resources"], "V1ResourceRequirements")
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert values["global"]["dagsterHome"] in _dockerfile()


def test_the_user_deployment_serves_the_projects_definitions(values):
    [deployment] = values["dagster-user-deployments"]["deployments"]
    grpc = dagster_cli.commands["api"].commands["grpc"]
    ctx = grpc.make_context("grpc", list(deployment["dagsterApiGrpcArgs"]) + ["--port", str(deployment["port"])])
    module_name = ctx.params["module_name"]
    module = importlib.import_module(module_name if isinstance(module_name, str) else module_name[0])
    assert isinstance(module.defs, dg.Definitions)


# ───────────────────────────── one host: compose ─────────────────────────────

def _parse_command(argv: list[str]) -> None:
    """Parse ``argv`` the way the program it names will, down to its subcommand: an unknown option or a
    misspelt subcommand fails here."""
    programs: dict[str, click.Command] = {"dagster": dagster_cli, "dagster-webserver": webserver_cli,
                                           "dagster-daemon": daemon_cli}
    if argv[0] == "everreach-data":
        cli.build_parser().parse_args(argv[1:])
        return
    if argv[0] == "dagster-celery":
        from dagster_celery.cli import main as celery_cli
        programs["dagster-celery"] = celery_cli
    command, args = programs[argv[0]], argv[1:]
    ctx = command.make_context(argv[0], list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        name, command, args = command.resolve_command(ctx, ctx.protected_args + ctx.args)
        ctx = command.make_context(name, list(args), parent=ctx)


@pytest.fixture(scope="module")
def compose() -> dict:
    return _instance(DEPLOY / "compose" / "compose.yaml")


def test_every_compose_service_runs_a_real_command_of_the_image(compose):
    services = compose["services"]
    assert {"migrate", "receiver-1", "receiver-2", "proxy", "code-server", "webserver", "daemon"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"
        if service.get("image", "").startswith("${EVERREACH_IMAGE"):
            _parse_command(service["command"])
            assert service["env_file"] == [".env"]
    assert {services["receiver-1"]["command"][1], services["receiver-2"]["command"][1]} == {"serve"}
    assert "ports" not in services["receiver-1"]  # behind the proxy
    assert all(p.startswith("127.0.0.1:") for p in services["webserver"]["ports"])  # the UI has no login


def test_the_compose_workspace_points_at_its_code_server(compose):
    [location] = _instance(DEPLOY / "compose" / "workspace.yaml")["load_from"]
    ok(WORKSPACE_CONFIG_SCHEMA, {"load_from": [location]})
    code_server = compose["services"]["code-server"]["command"]
    assert location["grpc_server"]["host"] == "code-server"
    assert str(location["grpc_server"]["port"]) == code_server[code_server.index("-p") + 1]
    for role in ("webserver", "daemon"):
        command = compose["services"][role]["command"]
        assert (PROJECT_ROOT / command[command.index("-w") + 1]) == DEPLOY / "compose" / "workspace.yaml"
    caddy = (DEPLOY / "compose" / "Caddyfile").read_text(encoding="utf-8")
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddy).group(1).split()
    assert upstreams == ["receiver-1:8000", "receiver-2:8000"]


def test_the_env_example_names_every_setting_compose_reads():
    text = (DEPLOY / "compose" / "env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.M))
    assert not names - set(Settings.model_fields) - DEPLOYMENT_SETTINGS, "names that are not settings"
    assert set(Settings.model_fields) <= names, f"left out: {sorted(set(Settings.model_fields) - names)}"
    set_here = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.M))
    assert {name for name in Settings.model_fields if Settings.is_secret(name)} <= set_here
    referenced = set()
    for path in (DEPLOY / "compose").glob("*.yaml"):
        referenced |= set(re.findall(r"\$\{([A-Z_]+)", path.read_text(encoding="utf-8")))
    assert referenced - {"EVERREACH_IMAGE"} <= names


# ───────────────────────────── Celery ─────────────────────────────

def _celery_location():
    spec = importlib.util.spec_from_file_location("everreach_celery_location", DEPLOY / "celery" / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_celery_config_is_valid_for_the_executor_and_its_workers(monkeypatch):
    from dagster_celery.cli import get_validated_config

    location = _celery_location()
    ok(celery_executor.config_schema.config_type, location.executor_config())
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://redis:6379/1")
    worker = get_validated_config(str(location.CELERY_YAML))  # what `dagster-celery worker start -y` loads
    assert worker["broker"] == "redis://redis:6379/0"
    broken = {**location.executor_config(), "brokr": "redis://x"}
    assert not validate_config(celery_executor.config_schema.config_type, broken).success


def test_the_celery_location_runs_on_celery_every_job_that_did_not_choose_its_executor():
    from everreach_data.definitions import defs as everreach

    chosen = {job.name: job.executor_def.name for job in everreach.get_repository_def().get_all_jobs()
              if job.has_specified_executor and job.executor_def.name != "multi_or_in_process_executor"}
    assert chosen["process_webhook_events"] == "in_process"
    executors = {job.name: job.executor_def.name for job in _celery_location().defs.get_repository_def().get_all_jobs()}
    assert {name: executors[name] for name in chosen} == chosen  # a job's own choice stands
    others = {name: executor for name, executor in executors.items() if name not in chosen}
    assert "send_outbound_messages" in others and any(name.startswith("__ASSET_JOB") for name in others)
    assert set(others.values()) == {"celery"}


def test_the_celery_compose_override_runs_real_commands(compose):
    override = _instance(DEPLOY / "compose" / "celery.yaml")
    for name, service in override["services"].items():
        if "command" in service and name != "redis":
            _parse_command(service["command"])
        for dependency in service.get("depends_on", {}):
            assert dependency in override["services"] or dependency in compose["services"]
    code_server = override["services"]["code-server"]["command"]
    assert (PROJECT_ROOT / code_server[code_server.index("-f") + 1]) == DEPLOY / "celery" / "definitions.py"
    worker = override["services"]["celery-worker"]["command"]
    assert (PROJECT_ROOT / worker[worker.index("-y") + 1]) == DEPLOY / "celery" / "celery.yaml"
    assert shlex.join(worker).startswith("dagster-celery worker start")
