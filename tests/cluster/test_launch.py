"""Request builders for EMR and Dataproc.

The EMR, Step Functions, EventBridge Scheduler and Dataproc services cannot exist on
this machine (no network beyond loopback), so the EMR-side requests are checked with
botocore's Stubber: a mock of those APIs, used only because the services cannot be
reached. It still runs botocore's real parameter validation against each service's
published model, so a misspelt key or a wrong type fails here as it would in AWS.
The Dataproc side (REST JSON/YAML, no Google client installed) is checked for
structure, and every generated job command line is parsed back by the real stage
argument parser.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ParamValidationError
from botocore.stub import ANY, Stubber

from cluster import launch
from crawlpairs.config import Config, ConfigError
from crawlpairs.stage import Stage, build_parser, config_from_args

REPO = Path(__file__).resolve().parents[2]


def _client(service: str):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")


def _cfg() -> Config:
    cfg = Config()
    cfg.input = ["s3://commoncrawl/crawl-data/CC-MAIN-2024-33/segments/x/wat/a.warc.wat.gz", "@paths.txt"]
    cfg.output = "s3://bucket/out"
    cfg.storage.spark_s3_scheme = "s3"
    cfg.extract.min_text_length = 7
    cfg.extract.drop_extensions = ["svg", "gif", "ico"]
    cfg.extract.exact_dedup = False
    cfg.dedup.seen = "s3://bucket/seen"
    cfg.score.language_thresholds = {"en": 0.3, "de": 0.27}
    cfg.score.pretrained = None
    cfg.spark.conf = {"spark.executor.memory": "6g"}
    cfg.spark.shuffle_partitions = 400
    return cfg


def _job_args(cmd: list[str]) -> list[str]:
    """What follows the .py in a spark-submit argv."""
    i = next(n for n, a in enumerate(cmd) if a.endswith(".py"))
    return cmd[i + 1:]


def _submit_opts(cmd: list[str]) -> dict[str, str]:
    i = next(n for n, a in enumerate(cmd) if a.endswith(".py"))
    opts: dict[str, str] = {}
    for flag, value in zip(cmd[1:i:2], cmd[2:i:2], strict=True):
        if flag == "--conf":
            k, v = value.split("=", 1)
            opts[k] = v
        else:
            opts[flag] = value
    return opts


def test_run_job_flow_request_passes_emr_validation():
    spec = launch.EmrSpec(artefacts="s3://bucket/crawlpairs/0.1.0", subnet_id="subnet-1", key_name="k")
    request = launch.emr_cluster_request(spec, launch.emr_steps(list(launch.STAGES), _cfg(), spec))
    emr = _client("emr")
    with Stubber(emr) as stub:
        stub.add_response("run_job_flow", {"JobFlowId": "j-TEST"}, expected_params=request)
        assert emr.run_job_flow(**request)["JobFlowId"] == "j-TEST"
        stub.assert_no_pending_responses()
    roles = [(g["InstanceRole"], g["Name"]) for g in request["Instances"]["InstanceGroups"]]
    assert roles == [("MASTER", "master"), ("CORE", "core"), ("TASK", "task-cpu"), ("TASK", "task-gpu")]
    markets = [g["Market"] for g in request["Instances"]["InstanceGroups"]]
    assert markets == ["ON_DEMAND", "ON_DEMAND", "SPOT", "ON_DEMAND"]  # only the CPU task group is spot
    assert request["Instances"]["Ec2SubnetId"] == "subnet-1" and request["Instances"]["Ec2KeyName"] == "k"
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert [s["Name"] for s in request["Steps"]] == [f"crawlpairs {s}" for s in launch.STAGES]
    assert {s["ActionOnFailure"] for s in request["Steps"]} == {"CANCEL_AND_WAIT"}
    gpu_group = request["Instances"]["InstanceGroups"][-1]
    gpu_yarn = next(c for c in gpu_group["Configurations"] if c["Classification"] == "yarn-site")["Properties"]
    assert gpu_yarn["yarn.nodemanager.resource-plugins"] == "yarn.io/gpu"
    defaults = next(c for c in request["Configurations"] if c["Classification"] == "spark-defaults")["Properties"]
    assert defaults["spark.executor.resource.gpu.discoveryScript"] == launch.DISCOVERY_SCRIPT
    # GPU amounts are per step, never cluster-wide: CPU stages must not ask for GPUs.
    assert "spark.executor.resource.gpu.amount" not in defaults
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": "s3://bucket/crawlpairs/0.1.0/node-setup.sh", "Args": ["s3://bucket/crawlpairs/0.1.0"]}


def test_stubber_validation_is_real():
    """A wrong key is rejected by botocore's model check even under the Stubber."""
    emr = _client("emr")
    with Stubber(emr) as stub:
        stub.add_response("run_job_flow", {"JobFlowId": "j-TEST"})
        with pytest.raises(ParamValidationError):
            emr.run_job_flow(Name="x", Instances={"InstanceGroup": []})


def test_add_steps_chain_stages_and_only_score_asks_for_gpus():
    spec = launch.EmrSpec(artefacts="s3://bucket/crawlpairs/0.1.0/")
    cfg = _cfg()
    request = launch.emr_add_steps_request("j-1", list(launch.STAGES), cfg, spec)
    emr = _client("emr")
    with Stubber(emr) as stub:
        stub.add_response("add_job_flow_steps", {"StepIds": ["s-1"] * 5}, expected_params=request)
        emr.add_job_flow_steps(**request)
    assert request["JobFlowId"] == "j-1"
    assert {s["HadoopJarStep"]["Jar"] for s in request["Steps"]} == {"command-runner.jar"}
    cmds = {s["Name"].split()[-1]: s["HadoopJarStep"]["Args"] for s in request["Steps"]}
    assert list(cmds) == ["extract", "dedup", "download", "score", "index"]
    for stage, cmd in cmds.items():
        opts = _submit_opts(cmd)
        assert cmd[0] == "spark-submit" and opts["--py-files"] == "s3://bucket/crawlpairs/0.1.0/crawlpairs-0.1.0.zip"
        assert f"s3://bucket/crawlpairs/0.1.0/jobs/{stage}.py" in cmd
        assert opts["spark.executor.memory"] == "6g" and opts["spark.sql.shuffle.partitions"] == "400"
        assert ("spark.executor.resource.gpu.amount" in opts) == (stage == "score")
    args = {s: _job_args(c) for s, c in cmds.items()}
    assert args["dedup"][:2] == ["--input", "s3://bucket/out/candidates"]
    assert args["score"][:2] == ["--input", "s3://bucket/out/images"]
    assert args["index"][:2] == ["--input", "s3://bucket/out/embeddings"]
    assert launch.spark_conf("score", cfg, 1, 4, 2)["spark.task.resource.gpu.amount"] == "0.25"
    cfg.score.device = "cpu"
    assert "spark.executor.resource.gpu.amount" not in launch.spark_conf("score", cfg, 1, 1, 2)


@pytest.mark.parametrize("stage", list(launch.STAGES))
def test_job_arguments_parse_back_to_the_same_config(stage):
    """The flags a step passes are read by the real stage parser into the same settings."""
    cfg = _cfg()
    info = launch.STAGES[stage]
    stage_obj = type("S", (Stage,), {"name": stage, "section": info.section, "output_dir": stage})()
    args = build_parser(stage_obj).parse_args(launch.stage_args(stage, cfg))
    got = config_from_args(args, stage_obj)
    assert getattr(got, info.section) == getattr(cfg, info.section)
    assert got.storage == cfg.storage
    assert got.output == (cfg.output + "/index" if stage == "index" else cfg.output)
    assert got.input == launch.stage_input(stage, cfg)


def test_recrawl_state_machine_and_schedule():
    spec = launch.EmrSpec(run_config="s3://bucket/crawlpairs/run.toml")
    sfn_req = launch.emr_state_machine_request(spec, launch.example_config())
    definition = json.loads(sfn_req["definition"])
    states = definition["States"]
    assert definition["StartAt"] in states
    for name, state in states.items():
        for target in [state.get("Next")] + [c["Next"] for c in state.get("Catch", [])]:
            assert target is None or target in states, (name, target)
    assert any(s.get("End") for s in states.values())
    step_args = states["Recrawl"]["Parameters"]["Step"]["HadoopJarStep"]["Args"]
    assert step_args[0] == "spark-submit" and any(a.endswith("/jobs/recrawl.py") for a in step_args)
    # recrawl runs extract + dedup with settings its flags do not cover: they travel in the run config
    assert _submit_opts(step_args)["--files"] == "s3://bucket/crawlpairs/run.toml"
    job_args = _job_args(step_args)
    assert job_args[:2] == ["--config", "run.toml"] and "--input" not in job_args
    from crawlpairs.cli import load_stage

    try:
        recrawl = load_stage("recrawl")()
    except ImportError:
        recrawl = None
    if recrawl is not None:  # every flag is one the real recrawl parser knows
        _, unknown = build_parser(recrawl).parse_known_args(job_args)
        assert unknown == []
    # the cluster created by the state machine is a valid RunJobFlow request
    # the cluster created by the state machine: alive until the step is added, idle timeout as a
    # safety net, no steps of its own
    create = states["CreateCluster"]["Parameters"]
    emr = _client("emr")
    with Stubber(emr) as stub:
        stub.add_response("run_job_flow", {"JobFlowId": "j-2"},
                          expected_params={**create, "Name": "crawlpairs-recrawl",
                                           "Instances": {**create["Instances"], "KeepJobFlowAliveWhenNoSteps": True},
                                           "AutoTerminationPolicy": {"IdleTimeout": spec.idle_timeout_s}})
        emr.run_job_flow(**create)
    assert "Steps" not in create
    assert states["Recrawl"]["Parameters"]["Step"]["ActionOnFailure"] == "CONTINUE"  # so Terminate still runs
    assert states["TerminateAfterFailure"]["Next"] == "Failed" and states["Terminate"]["End"] is True
    sfn = _client("stepfunctions")
    with Stubber(sfn) as stub:
        stub.add_response("create_state_machine", {"stateMachineArn": spec.state_machine_arn,
                                                   "creationDate": "2026-01-01T00:00:00Z"},
                          expected_params={"name": "crawlpairs-recrawl", "roleArn": spec.state_machine_role_arn,
                                           "type": "STANDARD", "definition": ANY})
        sfn.create_state_machine(**sfn_req)
    sched_req = launch.emr_schedule_request(spec)
    scheduler = _client("scheduler")
    with Stubber(scheduler) as stub:
        stub.add_response("create_schedule", {"ScheduleArn": "arn:aws:scheduler:us-east-1:1:schedule/default/x"},
                          expected_params={**sched_req, "Name": "crawlpairs-recrawl",
                                           "ScheduleExpression": "cron(0 6 ? * MON *)",
                                           "Target": {**sched_req["Target"], "Arn": spec.state_machine_arn,
                                                      "RoleArn": spec.scheduler_role_arn}})
        scheduler.create_schedule(**sched_req)


def test_cli_apply_sends_the_requests_and_the_schedule_targets_the_new_state_machine(monkeypatch, capsys):
    """`--apply` through boto3 (Stubber clients): the schedule is pointed at the ARN create_state_machine
    returned, not the placeholder in the spec; steps go to the cluster named by --cluster-id."""
    new_arn = "arn:aws:states:us-east-1:999999999999:stateMachine:crawlpairs-recrawl"
    clients = {name: _client(name) for name in ("emr", "stepfunctions", "scheduler")}
    stubs = {name: Stubber(c) for name, c in clients.items()}
    stubs["stepfunctions"].add_response(
        "create_state_machine", {"stateMachineArn": new_arn, "creationDate": "2026-01-01T00:00:00Z"},
        expected_params={"name": "crawlpairs-recrawl", "roleArn": launch.EmrSpec().state_machine_role_arn,
                         "type": "STANDARD", "definition": ANY})
    stubs["scheduler"].add_response(
        "create_schedule", {"ScheduleArn": "arn:aws:scheduler:us-east-1:1:schedule/default/crawlpairs-recrawl"},
        expected_params={"Name": "crawlpairs-recrawl", "ScheduleExpression": ANY, "ScheduleExpressionTimezone": "UTC",
                         "FlexibleTimeWindow": ANY, "State": "ENABLED", "Description": ANY,
                         "Target": {"Arn": new_arn, "RoleArn": launch.EmrSpec().scheduler_role_arn,
                                    "Input": "{}", "RetryPolicy": ANY}})
    stubs["emr"].add_response(
        "add_job_flow_steps", {"StepIds": ["s-1", "s-2"]},
        expected_params={"JobFlowId": "j-9", "Steps": [
            {"Name": "crawlpairs download", "ActionOnFailure": "CANCEL_AND_WAIT", "HadoopJarStep": ANY},
            {"Name": "crawlpairs score", "ActionOnFailure": "CANCEL_AND_WAIT", "HadoopJarStep": ANY}]})
    regions = []

    def client(service, region_name=None, **_):
        regions.append(region_name)
        return clients[service]

    monkeypatch.setattr(boto3, "client", client)
    for stub in stubs.values():
        stub.activate()
    assert launch.main(["emr-schedule", "--output", "s3://b/o", "--apply"]) == 0
    assert json.loads(capsys.readouterr().out)["ScheduleArn"].endswith("/crawlpairs-recrawl")
    assert launch.main(["emr-steps", "--output", "s3://b/o", "--stages", "download,score",
                        "--cluster-id", "j-9", "--apply"]) == 0
    assert json.loads(capsys.readouterr().out)["StepIds"] == ["s-1", "s-2"]
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()
    assert regions == ["us-east-1"] * 3


def test_dataproc_requests_structure():
    spec = launch.DataprocSpec(artefacts="gs://b/crawlpairs/0.1.0")
    cfg = launch.example_dataproc_config()
    cluster = launch.dataproc_cluster(spec)
    config = cluster["config"]
    assert config["secondaryWorkerConfig"]["accelerators"] == [{"acceleratorTypeUri": "nvidia-tesla-t4",
                                                                "acceleratorCount": 1}]
    inits = [a["executableFile"] for a in config["initializationActions"]]
    assert inits[-1] == "gs://b/crawlpairs/0.1.0/node-setup.sh" and "install_gpu_driver.sh" in inits[0]
    assert config["gceClusterConfig"]["metadata"]["crawlpairs-artefacts"] == "gs://b/crawlpairs/0.1.0"
    assert all(":" in k for k in config["softwareConfig"]["properties"])  # prefix:property form
    score = launch.dataproc_job("score", cfg, spec)["pysparkJob"]
    assert score["mainPythonFileUri"] == "gs://b/crawlpairs/0.1.0/jobs/score.py"
    assert score["pythonFileUris"] == ["gs://b/crawlpairs/0.1.0/crawlpairs-0.1.0.zip"]
    assert score["properties"]["spark.executor.resource.gpu.amount"] == "1"
    assert "spark.executor.resource.gpu.amount" not in launch.dataproc_job("extract", cfg, spec)["pysparkJob"]["properties"]
    template = launch.dataproc_workflow_template(spec, cfg)
    assert [j["stepId"] for j in template["jobs"]] == ["recrawl"]
    assert "placement" not in template["jobs"][0]  # jobs of a template get the managed cluster
    sched = launch.cloud_scheduler_job(spec)
    assert sched["httpTarget"]["uri"].endswith(f"/workflowTemplates/{spec.template_id}:instantiate")
    with pytest.raises(ConfigError):
        launch.dataproc_job("publish-everything", cfg, spec)


def test_committed_definitions_are_the_rendered_ones(tmp_path):
    """cluster/emr/*.json and cluster/dataproc/*.yaml are exactly what `launch.py render` writes."""
    for path in launch.render(tmp_path):
        rel = path.relative_to(tmp_path)
        committed = REPO / "cluster" / rel
        assert committed.read_text() == path.read_text(), f"{rel} is stale: run python cluster/launch.py render"
        if path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text())
        else:
            assert json.loads(path.read_text())


def test_spec_from_toml_and_bad_field(tmp_path):
    spec_file = tmp_path / "emr.toml"
    spec_file.write_text('artefacts = "s3://x/crawlpairs/0.1.0"\ngpu_task_count = 0\ncpu_task_spot = "no"\n')
    spec = launch.load_spec(launch.EmrSpec, str(spec_file))
    assert spec.gpu_task_count == 0 and spec.cpu_task_spot is False
    groups = [g["Name"] for g in launch.emr_cluster_request(spec)["Instances"]["InstanceGroups"]]
    assert "task-gpu" not in groups
    spec_file.write_text("gpu_count = 2\n")
    with pytest.raises(ConfigError, match="gpu_count"):
        launch.load_spec(launch.EmrSpec, str(spec_file))


def test_cli_prints_requests(capsys, tmp_path):
    assert launch.main(["emr-steps", "--artefacts", "s3://b/crawlpairs/0.1.0", "--output", "s3://b/o",
                        "--input", "a.wat.gz", "--stages", "extract,dedup", "--cluster-id", "j-9"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["JobFlowId"] == "j-9" and len(printed["Steps"]) == 2
    assert launch.main(["emr-steps", "--stages", "extract,bogus", "--output", "s3://b/o"]) == 2
    assert launch.main(["dataproc-schedule", "--output", "gs://b/o"]) == 0
    assert "gcloud scheduler jobs create http" in capsys.readouterr().out


def test_stage_args_argparse_namespace_has_no_leftovers():
    """Every flag the builder emits is known to the stage parser (parse_args would exit otherwise)."""
    cfg = _cfg()
    stage_obj = type("S", (Stage,), {"name": "score", "section": "score", "output_dir": "scored"})()
    ns, unknown = build_parser(stage_obj).parse_known_args(launch.stage_args("score", cfg))
    assert unknown == [] and isinstance(ns, argparse.Namespace)
