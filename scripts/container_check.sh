#!/usr/bin/env bash
# The container, for real, as an operator would run it: build the image, bring compose up, wait for the
# daemon to turn healthy, feed the inbox, see a night publish, freeze the daemon and see it turn unhealthy,
# stop it in the middle of a night, and check the home on the volume. Prints each step's seconds.
#
#   scripts/container_check.sh              # needs a Docker daemon, and compose (v2 plugin or v1)
#   TORCH_INDEX=<index> scripts/container_check.sh   # passed to the build (see the Dockerfile)
#
# It uses its own compose project (dmn-check) and removes its containers and volume at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
project=dmn-check
if docker compose version >/dev/null 2>&1; then compose=(docker compose -p "$project"); else compose=(docker-compose -p "$project"); fi
started=$SECONDS
step() { printf '%6ds  %s\n' "$((SECONDS - started))" "$*"; }
health() { docker inspect -f '{{.State.Health.Status}}' "$("${compose[@]}" ps -q dmn)"; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { step "FAILED: $what within ${limit} s"; "${compose[@]}" logs --tail 40 dmn; exit 1; }
    sleep 2
  done
}
in_dmn() { "${compose[@]}" exec -T dmn "$@"; }
is_health() { test "$(health)" = "$1"; }
gauge_shows() {  # gauge_shows LINE: the daemon's /metrics has LINE
  in_dmn python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())" \
    | grep -qF "$1"
}
cleanup() { "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "building the image"
docker build -q -t dmn ${TORCH_INDEX:+--build-arg TORCH_INDEX="$TORCH_INDEX"} . >/dev/null
step "built: $(docker image inspect -f '{{.Size}}' dmn | awk '{printf "%.2f GB", $1/1e9}')"
"${compose[@]}" up -d dmn >/dev/null
wait_for 120 "the daemon turning healthy" is_health healthy
step "healthy (the daemon beats)"

# A day of System 2 logs, written into the shared inbox from inside the container, then a night.
in_dmn python -c "from dmn import Home; from dmn.worlds.synthetic import write_logs
write_logs(Home.resolve(), situations=8, dim=64, episodes=60, steps=20)"
step "the inbox holds a day of logs"
in_dmn dmn consolidate --wait 120 | grep -q "published"
step "a night published: $(in_dmn dmn status --json | tr -d '\n' | grep -o '"coverage": [0-9.]*' | head -1)"
in_dmn dmn sql "SELECT version, coverage, precision FROM artifacts WHERE current"
wait_for 90 "the daemon's gauges to show the bundle" gauge_shows 'dmn_bundle_version{world="synthetic"} 1.0'
step "the daemon's gauges show it (read from the home, though another process published it)"

docker kill -s STOP "$("${compose[@]}" ps -q dmn)" >/dev/null
wait_for 150 "the frozen daemon turning unhealthy" is_health unhealthy
step "frozen: unhealthy"
docker kill -s CONT "$("${compose[@]}" ps -q dmn)" >/dev/null
wait_for 150 "the thawed daemon turning healthy again" is_health healthy
step "thawed: healthy again"

# Stop it in the middle of a night: more logs, a night started in the background, a stop a few seconds in.
in_dmn python -c "from dmn import Home; from dmn.worlds.synthetic import write_logs
write_logs(Home.resolve(), situations=8, dim=64, episodes=200, steps=20, day=1)"
in_dmn sh -c 'dmn consolidate --wait 120 >/dev/null 2>&1 &'
sleep 4
stop_started=$SECONDS
"${compose[@]}" stop -t 30 dmn >/dev/null
step "stopped in the middle of a night in $((SECONDS - stop_started)) s"
"${compose[@]}" run --rm --no-deps --entrypoint dmn dmn check
step "the home on the volume is whole"
"${compose[@]}" run --rm --no-deps --entrypoint dmn dmn status | head -12
step "done"
