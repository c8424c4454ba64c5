"""The container files agree with each other and with the CLI (Docker itself is not on these machines)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dmn_help(*command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dmn", *command, "--help"], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout


def ray_start_help() -> str:
    done = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--help"], capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_image_runs_dmn_as_a_non_root_user_with_its_home_on_a_volume():
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in ("root", "0")
    home = re.search(r"^ENV DMN_HOME=(\S+)", DOCKERFILE, re.M).group(1)
    assert f'VOLUME ["{home}"]' in DOCKERFILE and "HEALTHCHECK" in DOCKERFILE
    assert re.search(r'^ENTRYPOINT \["dmn"\]', DOCKERFILE, re.M)
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert "torch==2.13.0" in DOCKERFILE


def test_every_service_runs_this_one_image_real_commands_and_mounts_the_home():
    home = re.search(r"^ENV DMN_HOME=(\S+)", DOCKERFILE, re.M).group(1)
    services = COMPOSE["services"]
    assert {"dmn", "agent"} <= set(services)
    assert (ROOT / services["dmn"]["build"] / "Dockerfile").exists() and "build" not in services["agent"]
    assert {service["image"] for service in services.values()} == {"dmn"}  # built once, the README's tag
    for name, service in services.items():
        volume, target = service["volumes"][0].split(":")
        assert volume in COMPOSE["volumes"] and target == home, name  # one shared home, where DMN_HOME says
        words = service["command"]
        if service.get("entrypoint") == ["ray"]:  # the optional Ray cluster's nodes
            assert service["profiles"] == ["ray"] and words[0] == "start", name
            text = ray_start_help()
            for option in (w.split("=")[0] for w in words if w.startswith("--")):
                assert option in text, f"{name}: ray start has no {option}"
            continue
        command = [w for w in words[:2] if not w.startswith("-")]
        if command[0] != "world":
            command = command[:1]
        text = dmn_help(*command)
        for option in (w for w in words if w.startswith("--")):
            assert option in text, f"{name}: dmn {' '.join(command)} has no {option}"
    daemon = services["dmn"]
    assert daemon["command"][0] == "daemon" and "healthcheck" not in daemon  # the image's: the daemon's heartbeat
    check = re.search(r"^HEALTHCHECK .* CMD (\[.+\])$", DOCKERFILE, re.M).group(1)
    assert json.loads(check)[:2] == ["dmn", "alive"] and "--within" in dmn_help("alive")
    assert services["agent"]["healthcheck"] == {"disable": True}  # it plays a day and exits: no daemon to beat
    assert "--seed $$(date +%s)" in services["agent"]["entrypoint"][2] and "--seed" in dmn_help("world", "run")
    # With the Ray engine the daemon's container joins the head's cluster as a node, as the workers do.
    head = dict(w.lstrip("-").split("=") for w in services["ray-head"]["command"] if "=" in w)
    assert daemon["environment"]["RAY_ADDRESS"] == f"ray-head:{head['port']}"
    assert f"--address={daemon['environment']['RAY_ADDRESS']}" in services["ray-worker"]["command"]
    assert 'ray start --address="$$RAY_ADDRESS" --num-cpus=0' in daemon["entrypoint"][2]
    assert daemon["entrypoint"][2].endswith('exec dmn "$$@"') and daemon["entrypoint"][3] == "dmn"
    engine = daemon["command"].index("--engine") + 1
    assert daemon["command"][engine] == daemon["environment"]["DMN_ENGINE"] and "--engine" in dmn_help("daemon")
    port = daemon["command"][daemon["command"].index("--metrics-port") + 1]
    assert daemon["ports"] == [f"{port}:{port}"]
