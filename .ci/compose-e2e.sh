#!/usr/bin/env bash
# The containers' end-to-end check (issue 4), exactly as docs/containers.md says:
# offline build, `docker compose up`, centroids checked against the plaintext
# reference, a party container stopped mid-job (the job must fail naming it and
# the next job must succeed), `docker compose down -v`.
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=smsci
PY=.venv/bin/python
t0=$(date +%s)
step() { echo "[compose-e2e +$(( $(date +%s) - t0 ))s] $*"; }
cleanup() { docker compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "offline image build"
scripts/docker-offline-build.sh
cleanup

step "docker compose up --exit-code-from client"
docker compose up --exit-code-from client > /tmp/compose-up.log 2>&1 || {
  tail -60 /tmp/compose-up.log; echo "compose up failed"; exit 1; }
# the client's lines, without compose's colour codes and "client_1 |" prefixes
sed -e 's/\x1b\[[0-9;]*m//g' /tmp/compose-up.log | grep -a -E '^client[-_]1 +\|' \
  | sed -E 's/^client[-_]1 +\| ?//' > /tmp/compose-client.out || true
tail -12 /tmp/compose-client.out

step "checking the printed centroids against the plaintext reference"
docker compose up -d coordinator alpha beta gamma >/dev/null 2>&1   # the job history is in its volume
wait_healthy() {
  for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q "$1")")" = healthy ] && return 0
    sleep 2
  done
  echo "$1 did not become healthy"; return 1
}
for s in coordinator alpha beta gamma; do wait_healthy "$s"; done
docker compose run --rm --no-deps -T client job list --format json --server-name coordinator \
  > /tmp/compose-jobs.json
$PY - /tmp/compose-client.out /tmp/compose-jobs.json <<'PYEOF'
import json, re, sys
import numpy as np
from meanshift_cli.cluster_init import synthetic_parts
from secure_meanshift.compare import match_error
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift

lines = open(sys.argv[1]).read().splitlines()
cents = np.array([[float(v) for v in l.split()] for l in lines
                  if re.fullmatch(r"\s*-?\d+\.\d+\s+-?\d+\.\d+\s*", l)])
job = json.load(open(sys.argv[2]))[0]
assert job["state"] == "succeeded", job
p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=16, max_iter=30,
                    seed=int(job["seed"]))
ref = reference_meanshift(synthetic_parts(3, 150), p)
err, unmatched = match_error(cents, ref.centroids)
print(f"{len(cents)} centroids, max |container - reference| = {err:.2e}")
assert unmatched == 0 and err < 1e-4, (cents, ref.centroids)
PYEOF

step "stop a party container mid-job"
docker compose run --rm --no-deps -T client job submit /client/long-job.yaml --wait \
  --server-name coordinator --format json > /tmp/compose-long.json 2>/dev/null &
runner=$!
for _ in $(seq 1 90); do
  docker compose run --rm --no-deps -T client job list --format json --server-name coordinator \
    2>/dev/null | $PY -c "import json,sys; j=json.load(sys.stdin); sys.exit(0 if j and j[0]['state']=='running' and j[0]['iterations']>0 else 1)" && break
  sleep 2
done
docker compose stop -t 1 gamma >/dev/null 2>&1
set +e; wait $runner; rc=$?; set -e
$PY - /tmp/compose-long.json "$rc" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
print("long job:", j["state"], "-", j.get("reason"))
assert sys.argv[2] != "0" and j["state"] == "failed" and "gamma" in j["reason"], j
PYEOF

step "the cluster recovers: restart gamma, the next job succeeds"
docker compose start gamma >/dev/null 2>&1
wait_healthy gamma
docker compose run --rm --no-deps -T client job submit /client/job.yaml --wait \
  --server-name coordinator --format json > /tmp/compose-next.json
$PY -c "import json; j=json.load(open('/tmp/compose-next.json')); print('next job:', j['state']); assert j['state']=='succeeded'"

step "docker compose down -v"
cleanup
trap - EXIT
step "compose end-to-end: ok"
