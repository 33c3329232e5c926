"""Build the EMR and Dataproc requests that run crawlpairs stages with spark-submit.

Everything here is a pure function from a crawlpairs `Config` (what a stage does)
and an `EmrSpec` / `DataprocSpec` (where it runs) to the request bodies the cloud
APIs take: `emr.run_job_flow`, `emr.add_job_flow_steps`, a Step Functions state
machine and an EventBridge Scheduler schedule for the recurring `crawlpairs
recrawl`; a Dataproc cluster, pyspark jobs, a Workflow Template and a Cloud
Scheduler job (REST JSON, as `gcloud ... import --source` takes them). Only the
`emr ... --apply` commands call an API (boto3); nothing is needed at import time
beyond crawlpairs.config. Kept under cluster/ (not crawlpairs/) because no stage
and no CLI command needs it: it is an operator's tool, run from a checkout.

    python cluster/launch.py render [--out cluster]            # write the example definitions
    python cluster/launch.py emr-cluster  --spec emr.toml      # print run_job_flow request
    python cluster/launch.py emr-steps    --spec emr.toml --output s3://b/out --input @paths.txt \
        [--stages extract,dedup] [--config run.toml] [--cluster-id j-XXX --apply]
    python cluster/launch.py dataproc-job --spec dp.toml --stage extract --output gs://b/out --input ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(_HERE.parent))

from crawlpairs import config as config_mod  # noqa: E402
from crawlpairs.config import Config  # noqa: E402

EMR_DIR = _HERE / "emr"
DATAPROC_DIR = _HERE / "dataproc"
NODE_PREFIX = "/opt/crawlpairs"
NODE_PYTHON = f"{NODE_PREFIX}/venv/bin/python"
DISCOVERY_SCRIPT = f"{NODE_PREFIX}/gpu-discovery.sh"


@dataclass(frozen=True)
class StageInfo:
    section: str | None  # config section whose fields are the stage's flags
    input_dir: str | None  # input under the output root; None: the run's own --input
    gpu: bool = False
    output_sub: str = ""  # --output is the root, except for stages that take their own folder


# The order is the pipeline's; `input_dir` chains each stage to the previous one's output.
STAGES: dict[str, StageInfo] = {
    "extract": StageInfo("extract", None),
    "dedup": StageInfo("dedup", "candidates"),
    "download": StageInfo("download", "deduped"),
    "score": StageInfo("score", "images", gpu=True),
    "index": StageInfo("index", "embeddings", output_sub="index"),  # index takes --output OUT/index
}
RECRAWL = StageInfo("dedup", None)  # `crawlpairs recrawl`: finds new snapshots itself


def stage_info(stage: str) -> StageInfo:
    """The pipeline table, or for `recrawl` the section its job module declares (dedup if unreadable)."""
    if stage in STAGES:
        return STAGES[stage]
    try:
        from crawlpairs.cli import load_stage

        return StageInfo(getattr(load_stage(stage), "section", RECRAWL.section), None)
    except Exception:  # noqa: BLE001 - the job module is not there yet, or needs what this machine lacks
        return RECRAWL


@dataclass
class EmrSpec:
    """Where and on what an EMR cluster runs (not what the stages do: that is `Config`)."""

    artefacts: str = "s3://my-bucket/crawlpairs/0.1.0"  # what cluster/package.py --upload wrote
    name: str = "crawlpairs"
    release_label: str = "emr-7.5.0"
    region: str = "us-east-1"
    log_uri: str | None = "s3://my-bucket/emr-logs/"
    subnet_id: str | None = None
    key_name: str | None = None
    job_flow_role: str = "EMR_EC2_DefaultRole"
    service_role: str = "EMR_DefaultRole"
    master_type: str = "m6i.xlarge"
    core_type: str = "m6i.2xlarge"
    core_count: int = 2
    cpu_task_type: str = "c6i.4xlarge"
    cpu_task_count: int = 4
    cpu_task_spot: bool = True
    gpu_task_type: str = "g5.2xlarge"  # 1 x A10G, 8 vCPU
    gpu_task_count: int = 1  # 0: no GPU group (score falls back to CPU executors)
    gpus_per_gpu_node: int = 1
    tasks_per_gpu: int = 1  # > 1 shares a GPU between tasks (spark.task.resource.gpu.amount = 1/N)
    ebs_gb: int = 200
    idle_timeout_s: int = 3600  # auto-termination of an idle long-running cluster
    keep_alive: bool = True  # False: a transient cluster that ends after its steps
    deploy_mode: str = "cluster"
    # A crawlpairs TOML (the run.toml given to --config), uploaded by you: every step ships it
    # with --files and reads it with --config. Needed by recrawl, whose flags do not include
    # the extract / dedup settings it runs with.
    run_config: str | None = None
    tags: dict[str, str] = field(default_factory=lambda: {"project": "crawlpairs"})
    # Scheduling of `crawlpairs recrawl` (Step Functions + EventBridge Scheduler)
    schedule: str = "cron(0 6 ? * MON *)"  # Monday 06:00 UTC; CC publishes about monthly
    schedule_timezone: str = "UTC"
    state_machine_role_arn: str = "arn:aws:iam::123456789012:role/crawlpairs-sfn"
    scheduler_role_arn: str = "arn:aws:iam::123456789012:role/crawlpairs-scheduler"
    state_machine_arn: str = "arn:aws:states:us-east-1:123456789012:stateMachine:crawlpairs-recrawl"


@dataclass
class DataprocSpec:
    """Where and on what a Dataproc cluster runs."""

    artefacts: str = "gs://my-bucket/crawlpairs/0.1.0"
    project: str = "my-project"
    region: str = "us-central1"
    zone: str = "us-central1-a"
    cluster_name: str = "crawlpairs"
    image_version: str = "2.2-debian12"  # Spark 3.5, Python 3.11 (conda)
    service_account: str | None = None
    subnetwork: str | None = None
    staging_bucket: str | None = None
    master_type: str = "n1-standard-4"
    worker_type: str = "n1-standard-8"  # n1: the family GPUs attach to; secondaries share it
    worker_count: int = 2
    secondary_cpu_count: int = 4  # spot workers for extract / dedup / download
    gpu_type: str = "nvidia-tesla-t4"
    gpu_worker_count: int = 1  # secondary workers with one GPU each (0: none)
    gpus_per_gpu_node: int = 1
    tasks_per_gpu: int = 1
    disk_gb: int = 200
    idle_delete_ttl: str = "3600s"
    run_config: str | None = None  # gs:// URI of the run's TOML, shipped with fileUris (see EmrSpec)
    labels: dict[str, str] = field(default_factory=lambda: {"project": "crawlpairs"})
    # Scheduling of `crawlpairs recrawl` (Workflow Template + Cloud Scheduler)
    template_id: str = "crawlpairs-recrawl"
    schedule: str = "0 6 * * 1"  # unix cron, Monday 06:00
    schedule_timezone: str = "Etc/UTC"
    scheduler_service_account: str = "crawlpairs-scheduler@my-project.iam.gserviceaccount.com"


# -- loading specs -----------------------------------------------------------------


def load_spec(cls: type, path: str | None = None, overrides: dict[str, Any] | None = None):
    """A spec from a TOML file (fields at top level) and overrides, type-checked like Config."""
    values: dict[str, Any] = {}
    if path:
        values.update(tomllib.loads(Path(path).read_text(encoding="utf-8")))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    types_ = config_mod._field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise config_mod.ConfigError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    return cls(**{k: config_mod.coerce(k, types_[k], v) for k, v in values.items()})


# -- spark-submit command lines ----------------------------------------------------


def _flag_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def section_flags(cfg: Config, section: str, skip: tuple[str, ...] = ()) -> list[str]:
    """`--flag value` for every field of a section that differs from its default."""
    current = getattr(cfg, section)
    default = type(current)()
    args: list[str] = []
    for f in dataclasses.fields(current):
        value = getattr(current, f.name)
        if f.name in skip or value == getattr(default, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            args += [flag, _flag_value(value)]
    return args


def stage_input(stage: str, cfg: Config) -> list[str]:
    if stage not in STAGES:
        return []  # recrawl finds its own input (the crawls not yet done)
    info = stage_info(stage)
    if info.input_dir is None:
        return list(cfg.input)
    return [cfg.output.rstrip("/") + "/" + info.input_dir]


def stage_args(stage: str, cfg: Config, run_config: str | None = None) -> list[str]:
    """The job's own arguments (after the .py): input, output and non-default settings.

    `run_config` (a URI) is shipped beside the driver (--files / fileUris) and read with
    --config by its file name; the flags, from the same settings, still win over it.
    """
    info = stage_info(stage)
    args: list[str] = []
    if run_config:
        args += ["--config", run_config.rstrip("/").rsplit("/", 1)[-1]]
    inputs = stage_input(stage, cfg)
    if inputs:
        args += ["--input", *inputs]
    if cfg.output:
        args += ["--output", cfg.output.rstrip("/") + "/" + info.output_sub if info.output_sub else cfg.output]
    if info.section:
        args += section_flags(cfg, info.section)
    args += section_flags(cfg, "storage")
    # master / conf / jars / shuffle partitions belong to spark-submit, not to the job
    args += section_flags(cfg, "spark", skip=("master", "conf", "jars", "shuffle_partitions", "app_name"))
    return args


def spark_conf(stage: str, cfg: Config, gpus_per_node: int, tasks_per_gpu: int, gpu_nodes: int) -> dict[str, str]:
    conf = {"spark.app.name": f"crawlpairs-{stage}"}
    if cfg.spark.shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(cfg.spark.shuffle_partitions)
    if stage_info(stage).gpu and gpu_nodes > 0 and cfg.score.device != "cpu":
        # One executor per GPU; YARN places it only on a node that has one.
        conf.update({
            "spark.executor.resource.gpu.amount": "1",
            "spark.executor.resource.gpu.discoveryScript": DISCOVERY_SCRIPT,
            "spark.task.resource.gpu.amount": str(round(1 / max(1, tasks_per_gpu), 4)),
            "spark.executor.cores": str(max(1, tasks_per_gpu)),
            "spark.dynamicAllocation.maxExecutors": str(gpu_nodes * gpus_per_node),
        })
    conf.update(cfg.spark.conf)
    return conf


def code_uris(stage: str, artefacts: str) -> tuple[str, str]:
    """(the job's .py, the --py-files zip) in an artefact folder `.../<version>` (cluster/package.py's layout)."""
    artefacts = artefacts.rstrip("/")
    version = artefacts.rsplit("/", 1)[-1]
    return f"{artefacts}/jobs/{stage}.py", f"{artefacts}/crawlpairs-{version}.zip"


def spark_submit(stage: str, cfg: Config, artefacts: str, *, deploy_mode: str = "cluster",
                 gpus_per_node: int = 1, tasks_per_gpu: int = 1, gpu_nodes: int = 0,
                 run_config: str | None = None) -> list[str]:
    """The full spark-submit argv for one stage, with the code from the artefact folder."""
    main_py, py_files = code_uris(stage, artefacts)
    cmd = ["spark-submit", "--deploy-mode", deploy_mode, "--py-files", py_files]
    if cfg.spark.jars:
        cmd += ["--jars", ",".join(cfg.spark.jars)]
    if run_config:
        cmd += ["--files", run_config]
    for key, value in spark_conf(stage, cfg, gpus_per_node, tasks_per_gpu, gpu_nodes).items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append(main_py)
    return cmd + stage_args(stage, cfg, run_config)


def _check_stage(stage: str) -> None:
    if stage not in STAGES and stage != "recrawl":
        raise config_mod.ConfigError(f"--stages {stage}: unknown stage (one of {', '.join([*STAGES, 'recrawl'])})")


# -- EMR ---------------------------------------------------------------------------


def _emr_json(name: str) -> list[dict[str, Any]]:
    return json.loads((EMR_DIR / name).read_text(encoding="utf-8"))


def _group(name: str, role: str, instance_type: str, count: int, ebs_gb: int,
           market: str = "ON_DEMAND") -> dict[str, Any]:
    """One `InstanceGroupConfig`, each instance with one gp3 volume."""
    ebs = {"EbsBlockDeviceConfigs": [{"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": ebs_gb},
                                      "VolumesPerInstance": 1}]}
    return {"Name": name, "InstanceRole": role, "Market": market, "InstanceType": instance_type,
            "InstanceCount": count, "EbsConfiguration": ebs}


def emr_cluster_request(spec: EmrSpec, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Keyword arguments of `emr.run_job_flow` (also the Parameters of Step Functions' createCluster)."""
    groups = [_group("master", "MASTER", spec.master_type, 1, spec.ebs_gb),
              _group("core", "CORE", spec.core_type, spec.core_count, spec.ebs_gb)]
    if spec.cpu_task_count > 0:
        groups.append(_group("task-cpu", "TASK", spec.cpu_task_type, spec.cpu_task_count, spec.ebs_gb,
                             market="SPOT" if spec.cpu_task_spot else "ON_DEMAND"))
    if spec.gpu_task_count > 0:
        gpu = _group("task-gpu", "TASK", spec.gpu_task_type, spec.gpu_task_count, spec.ebs_gb)
        groups.append({**gpu, "Configurations": _emr_json("gpu-configurations.json")})
    instances: dict[str, Any] = {
        "InstanceGroups": groups,
        "KeepJobFlowAliveWhenNoSteps": spec.keep_alive,
        "TerminationProtected": False,
    }
    if spec.subnet_id:
        instances["Ec2SubnetId"] = spec.subnet_id
    if spec.key_name:
        instances["Ec2KeyName"] = spec.key_name
    request: dict[str, Any] = {
        "Name": spec.name,
        "ReleaseLabel": spec.release_label,
        "Applications": [{"Name": "Hadoop"}, {"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [{
            "Name": "crawlpairs-node-setup",
            "ScriptBootstrapAction": {"Path": f"{spec.artefacts.rstrip('/')}/node-setup.sh",
                                      "Args": [spec.artefacts.rstrip("/")]},
        }],
        "Configurations": _emr_json("configurations.json"),
        "JobFlowRole": spec.job_flow_role,
        "ServiceRole": spec.service_role,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": k, "Value": v} for k, v in spec.tags.items()],
    }
    if spec.keep_alive and spec.idle_timeout_s:
        request["AutoTerminationPolicy"] = {"IdleTimeout": spec.idle_timeout_s}
    if spec.log_uri:
        request["LogUri"] = spec.log_uri
    if steps:
        request["Steps"] = steps
    return request


def emr_step(stage: str, cfg: Config, spec: EmrSpec, action_on_failure: str = "CANCEL_AND_WAIT") -> dict[str, Any]:
    """One `StepConfig`: spark-submit through command-runner.jar."""
    _check_stage(stage)
    cmd = spark_submit(stage, cfg, spec.artefacts, deploy_mode=spec.deploy_mode,
                       gpus_per_node=spec.gpus_per_gpu_node, tasks_per_gpu=spec.tasks_per_gpu,
                       gpu_nodes=spec.gpu_task_count, run_config=spec.run_config)
    return {"Name": f"crawlpairs {stage}", "ActionOnFailure": action_on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": cmd}}


def emr_steps(stages: list[str], cfg: Config, spec: EmrSpec) -> list[dict[str, Any]]:
    """The stages in pipeline order; a failed stage cancels the ones after it."""
    action = "CANCEL_AND_WAIT" if spec.keep_alive else "TERMINATE_CLUSTER"
    return [emr_step(s, cfg, spec, action) for s in stages]


def emr_add_steps_request(cluster_id: str, stages: list[str], cfg: Config, spec: EmrSpec) -> dict[str, Any]:
    """Keyword arguments of `emr.add_job_flow_steps`."""
    return {"JobFlowId": cluster_id, "Steps": emr_steps(stages, cfg, spec)}


def emr_recrawl_state_machine(spec: EmrSpec, cfg: Config) -> dict[str, Any]:
    """Step Functions (ASL) definition: a transient cluster runs `crawlpairs recrawl`, then ends.

    The recrawl job (spark-submit of jobs/recrawl.py, the same code as the
    `crawlpairs recrawl` command) finds the snapshots not yet processed and runs
    the pipeline on them against the persistent seen-set, so the schedule itself
    carries no crawl id. The cluster is terminated on success and on failure.
    """
    # Alive with no steps (the step is added after creation), with the idle timeout as a safety net.
    transient = dataclasses.replace(spec, keep_alive=True, name=f"{spec.name}-recrawl")
    cluster = emr_cluster_request(transient)
    step = emr_step("recrawl", cfg, transient, action_on_failure="CONTINUE")
    terminate = {"Type": "Task", "Resource": "arn:aws:states:::elasticmapreduce:terminateCluster.sync",
                 "Parameters": {"ClusterId.$": "$.cluster.ClusterId"}}
    return {
        "Comment": "crawlpairs: process Common Crawl snapshots not yet done (crawlpairs recrawl)",
        "StartAt": "CreateCluster",
        "States": {
            "CreateCluster": {
                "Type": "Task", "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
                "Parameters": cluster,
                "ResultSelector": {"ClusterId.$": "$.ClusterId"}, "ResultPath": "$.cluster",
                "Next": "Recrawl",
            },
            "Recrawl": {
                "Type": "Task", "Resource": "arn:aws:states:::elasticmapreduce:addStep.sync",
                "Parameters": {"ClusterId.$": "$.cluster.ClusterId", "Step": step},
                "ResultPath": "$.step",
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "TerminateAfterFailure"}],
                "Next": "Terminate",
            },
            "Terminate": {**terminate, "End": True},
            "TerminateAfterFailure": {**terminate, "ResultPath": None, "Next": "Failed"},
            "Failed": {"Type": "Fail", "Error": "RecrawlFailed", "Cause": "the recrawl step failed; see the EMR step logs"},
        },
    }


def emr_state_machine_request(spec: EmrSpec, cfg: Config) -> dict[str, Any]:
    """Keyword arguments of `stepfunctions.create_state_machine`."""
    return {"name": f"{spec.name}-recrawl", "roleArn": spec.state_machine_role_arn, "type": "STANDARD",
            "definition": json.dumps(emr_recrawl_state_machine(spec, cfg), indent=2)}


def emr_schedule_request(spec: EmrSpec) -> dict[str, Any]:
    """Keyword arguments of `scheduler.create_schedule` (EventBridge Scheduler starts the state machine)."""
    return {
        "Name": f"{spec.name}-recrawl",
        "ScheduleExpression": spec.schedule,
        "ScheduleExpressionTimezone": spec.schedule_timezone,
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 60},
        "State": "ENABLED",
        "Target": {"Arn": spec.state_machine_arn, "RoleArn": spec.scheduler_role_arn, "Input": "{}",
                   "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}},
        "Description": "crawlpairs recrawl: new Common Crawl snapshots",
    }


# -- Dataproc ----------------------------------------------------------------------


def _disk(gb: int) -> dict[str, Any]:
    return {"bootDiskType": "pd-balanced", "bootDiskSizeGb": gb}


def dataproc_properties() -> dict[str, str]:
    return {
        "spark:spark.pyspark.python": NODE_PYTHON,
        "spark:spark.pyspark.driver.python": NODE_PYTHON,
        "spark-env:PYSPARK_PYTHON": NODE_PYTHON,
        "spark:spark.executor.resource.gpu.discoveryScript": DISCOVERY_SCRIPT,
        "spark:spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark:spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark:spark.task.maxFailures": "8",
        "capacity-scheduler:yarn.scheduler.capacity.resource-calculator":
            "org.apache.hadoop.yarn.util.resource.DominantResourceCalculator",
        "dataproc:dataproc.logging.stackdriver.job.driver.enable": "true",
    }


def dataproc_cluster_config(spec: DataprocSpec) -> dict[str, Any]:
    """The `config` of a Dataproc Cluster (REST JSON), shared by the cluster and the workflow template.

    The GPUs sit on secondary workers (same n1 family as the primaries, which GPUs
    attach to); the public GPU init action installs the driver and turns on YARN's
    GPU scheduling; node-setup.sh then installs each role's Python environment.
    """
    artefacts = spec.artefacts.rstrip("/")
    init_actions = []
    if spec.gpu_worker_count > 0:
        init_actions.append({
            "executableFile": f"gs://goog-dataproc-initialization-actions-{spec.region}/gpu/install_gpu_driver.sh",
            "executionTimeout": "1800s",
        })
    init_actions.append({"executableFile": f"{artefacts}/node-setup.sh", "executionTimeout": "1200s"})
    gce: dict[str, Any] = {
        "zoneUri": spec.zone,
        "metadata": {"crawlpairs-artefacts": artefacts, "gpu-driver-provider": "NVIDIA", "install-gpu-agent": "false"},
        "internalIpOnly": True,
    }
    if spec.service_account:
        gce["serviceAccount"] = spec.service_account
    if spec.subnetwork:
        gce["subnetworkUri"] = spec.subnetwork
    secondary_count = spec.secondary_cpu_count + spec.gpu_worker_count
    config: dict[str, Any] = {
        "gceClusterConfig": gce,
        "masterConfig": {"numInstances": 1, "machineTypeUri": spec.master_type, "diskConfig": _disk(spec.disk_gb)},
        "workerConfig": {"numInstances": spec.worker_count, "machineTypeUri": spec.worker_type,
                         "diskConfig": _disk(spec.disk_gb)},
        "softwareConfig": {"imageVersion": spec.image_version, "properties": dataproc_properties()},
        "initializationActions": init_actions,
        "lifecycleConfig": {"idleDeleteTtl": spec.idle_delete_ttl},
    }
    if spec.staging_bucket:
        config["configBucket"] = spec.staging_bucket
    if secondary_count > 0:
        secondary: dict[str, Any] = {"numInstances": secondary_count, "preemptibility": "SPOT",
                                     "diskConfig": _disk(spec.disk_gb)}
        if spec.gpu_worker_count > 0:
            # All secondaries share one config: with GPUs on, every secondary carries one.
            secondary["accelerators"] = [{"acceleratorTypeUri": spec.gpu_type,
                                          "acceleratorCount": spec.gpus_per_gpu_node}]
            secondary["numInstances"] = spec.gpu_worker_count
            secondary["preemptibility"] = "NON_PREEMPTIBLE"
        config["secondaryWorkerConfig"] = secondary
    return config


def dataproc_cluster(spec: DataprocSpec) -> dict[str, Any]:
    """A Dataproc Cluster resource (`gcloud dataproc clusters import NAME --source cluster.yaml`)."""
    return {"projectId": spec.project, "clusterName": spec.cluster_name, "labels": spec.labels,
            "config": dataproc_cluster_config(spec)}


def dataproc_job(stage: str, cfg: Config, spec: DataprocSpec, step_id: str | None = None) -> dict[str, Any]:
    """A Dataproc Job (REST JSON, `jobs.submit` body's `job`) running one stage."""
    _check_stage(stage)
    main_py, py_files = code_uris(stage, spec.artefacts)
    job: dict[str, Any] = {
        "pysparkJob": {
            "mainPythonFileUri": main_py,
            "pythonFileUris": [py_files],
            "args": stage_args(stage, cfg, spec.run_config),
            "properties": spark_conf(stage, cfg, spec.gpus_per_gpu_node, spec.tasks_per_gpu, spec.gpu_worker_count),
        },
        "labels": {"crawlpairs-stage": stage},
    }
    if cfg.spark.jars:
        job["pysparkJob"]["jarFileUris"] = list(cfg.spark.jars)
    if spec.run_config:
        job["pysparkJob"]["fileUris"] = [spec.run_config]
    if step_id:
        job["stepId"] = step_id
    else:
        job["placement"] = {"clusterName": spec.cluster_name}
    return job


def dataproc_workflow_template(spec: DataprocSpec, cfg: Config) -> dict[str, Any]:
    """Workflow Template: a managed (ephemeral) cluster runs `crawlpairs recrawl`, then is deleted."""
    return {
        "id": spec.template_id,
        "labels": spec.labels,
        "placement": {"managedCluster": {"clusterName": f"{spec.cluster_name}-recrawl",
                                         "config": dataproc_cluster_config(spec), "labels": spec.labels}},
        "jobs": [dataproc_job("recrawl", cfg, spec, step_id="recrawl")],
        "dagTimeout": "86400s",
    }


def cloud_scheduler_job(spec: DataprocSpec) -> dict[str, Any]:
    """Cloud Scheduler job (REST JSON) that instantiates the workflow template."""
    parent = f"projects/{spec.project}/regions/{spec.region}/workflowTemplates/{spec.template_id}"
    return {
        "name": f"projects/{spec.project}/locations/{spec.region}/jobs/{spec.template_id}",
        "description": "crawlpairs recrawl: new Common Crawl snapshots",
        "schedule": spec.schedule,
        "timeZone": spec.schedule_timezone,
        "httpTarget": {
            "uri": f"https://dataproc.googleapis.com/v1/{parent}:instantiate",
            "httpMethod": "POST",
            "oauthToken": {"serviceAccountEmail": spec.scheduler_service_account,
                           "scope": "https://www.googleapis.com/auth/cloud-platform"},
        },
        "retryConfig": {"retryCount": 2},
    }


def gcloud_commands(spec: DataprocSpec) -> list[str]:
    """The gcloud lines that put the rendered files in place (for docs and --print)."""
    return [
        f"gcloud dataproc clusters import {spec.cluster_name} --region={spec.region} "
        "--source=cluster/dataproc/cluster.yaml",
        f"gcloud dataproc workflow-templates import {spec.template_id} --region={spec.region} "
        "--source=cluster/dataproc/workflow-template.yaml",
        f"gcloud scheduler jobs create http {spec.template_id} --location={spec.region} "
        f"--schedule='{spec.schedule}' --time-zone={spec.schedule_timezone} "
        f"--uri=https://dataproc.googleapis.com/v1/projects/{spec.project}/regions/{spec.region}/"
        f"workflowTemplates/{spec.template_id}:instantiate --http-method=POST "
        f"--oauth-service-account-email={spec.scheduler_service_account}",
    ]


# -- rendering the example files ---------------------------------------------------


def example_config() -> Config:
    """The config the committed example definitions are rendered from."""
    cfg = Config()
    cfg.input = ["CC-MAIN-2024-33"]
    cfg.output = "s3://my-bucket/crawlpairs/out"
    cfg.storage.spark_s3_scheme = "s3"  # EMRFS
    cfg.dedup.seen = "s3://my-bucket/crawlpairs/seen"
    return cfg


def example_dataproc_config() -> Config:
    cfg = example_config()
    cfg.output = "gs://my-bucket/crawlpairs/out"
    cfg.storage.spark_s3_scheme = "s3a"
    cfg.dedup.seen = "gs://my-bucket/crawlpairs/seen"
    return cfg


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)


def render(out: Path) -> list[Path]:
    """Write the example definitions (the committed files are this output, checked by a test)."""
    emr = EmrSpec(run_config="s3://my-bucket/crawlpairs/run.toml")
    dp = DataprocSpec(run_config="gs://my-bucket/crawlpairs/run.toml")
    cfg, dcfg = example_config(), example_dataproc_config()
    header = "# Rendered by `python cluster/launch.py render` from EmrSpec/DataprocSpec defaults; edit the spec, not this.\n"
    files = {
        out / "emr" / "cluster.example.json": json.dumps(emr_cluster_request(emr), indent=2) + "\n",
        out / "emr" / "steps.example.json": json.dumps(emr_steps(list(STAGES), cfg, emr), indent=2) + "\n",
        out / "emr" / "recrawl-state-machine.json": json.dumps(emr_recrawl_state_machine(emr, cfg), indent=2) + "\n",
        out / "emr" / "recrawl-schedule.json": json.dumps(emr_schedule_request(emr), indent=2) + "\n",
        out / "dataproc" / "cluster.yaml": header + _yaml(dataproc_cluster(dp)),
        out / "dataproc" / "jobs.example.yaml": header + _yaml([dataproc_job(s, dcfg, dp) for s in STAGES]),
        out / "dataproc" / "workflow-template.yaml": header + _yaml(dataproc_workflow_template(dp, dcfg)),
        out / "dataproc" / "scheduler-job.json": json.dumps(cloud_scheduler_job(dp), indent=2) + "\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(files)


# -- command line ------------------------------------------------------------------


def _run_config(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(args.config)
    if args.input:
        cfg.input = list(args.input)
    if args.output:
        cfg.output = args.output
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/launch.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("render", help="write the example cluster/job/schedule definitions")
    p.add_argument("--out", default=str(_HERE))
    for name in ("emr-cluster", "emr-steps", "emr-schedule", "dataproc-cluster", "dataproc-job", "dataproc-schedule"):
        p = sub.add_parser(name)
        p.add_argument("--spec", help="TOML file of EmrSpec / DataprocSpec fields")
        p.add_argument("--artefacts", help="artefact folder URI (overrides the spec)")
        p.add_argument("--config", help="crawlpairs run config (TOML)")
        p.add_argument("--input", "-i", nargs="+")
        p.add_argument("--output", "-o")
        p.add_argument("--stages", default=",".join(STAGES), help="comma-separated, pipeline order")
        if name.startswith("emr"):
            p.add_argument("--cluster-id", help="add the steps to this running cluster (emr-steps)")
            p.add_argument("--apply", action="store_true", help="call the AWS API (boto3) instead of printing")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "render":
            for path in render(Path(args.out)):
                print(path)
            return 0
        cfg = _run_config(args)
        stages = [s for s in args.stages.split(",") if s]
        if args.cmd.startswith("emr"):
            spec = load_spec(EmrSpec, args.spec, {"artefacts": args.artefacts})
            if args.cmd == "emr-cluster":
                request, api, op = emr_cluster_request(spec), "emr", "run_job_flow"
            elif args.cmd == "emr-steps":
                if args.cluster_id:
                    request, api, op = emr_add_steps_request(args.cluster_id, stages, cfg, spec), "emr", "add_job_flow_steps"
                else:
                    request, api, op = emr_cluster_request(spec, emr_steps(stages, cfg, spec)), "emr", "run_job_flow"
            else:
                request, api, op = emr_schedule_request(spec), "scheduler", "create_schedule"
                if args.apply:  # the state machine first; the schedule targets the ARN it got
                    made = _call("stepfunctions", "create_state_machine", emr_state_machine_request(spec, cfg),
                                 spec.region)
                    request["Target"]["Arn"] = made["stateMachineArn"]
                else:
                    print(json.dumps(emr_recrawl_state_machine(spec, cfg), indent=2))
            if args.apply:
                print(json.dumps(_call(api, op, request, spec.region), indent=2, default=str))
            else:
                print(json.dumps(request, indent=2))
            return 0
        spec = load_spec(DataprocSpec, args.spec, {"artefacts": args.artefacts})
        if args.cmd == "dataproc-cluster":
            print(_yaml(dataproc_cluster(spec)))
        elif args.cmd == "dataproc-job":
            print(_yaml([dataproc_job(s, cfg, spec) for s in stages]))
        else:
            print(_yaml(dataproc_workflow_template(spec, cfg)))
            print(json.dumps(cloud_scheduler_job(spec), indent=2))
            print("\n".join(gcloud_commands(spec)))
        return 0
    except config_mod.ConfigError as exc:
        print(f"cluster/launch.py: error: {exc}", file=sys.stderr)
        return 2


def _call(service: str, operation: str, request: dict[str, Any], region: str) -> Any:
    import boto3

    return getattr(boto3.client(service, region_name=region), operation)(**request)


if __name__ == "__main__":
    raise SystemExit(main())
