#!/usr/bin/env bash
# Build the images and run the Compose cluster for real: prune a model end to end, lose a
# worker mid-search, restart the API mid-job, then tear everything down. Takes minutes, so it
# is not part of CI. Run from anywhere, as a user who may use Docker:
#
#   bash docker/smoke.sh
#
# Environment (defaults in brackets):
#   BASE_IMAGE   [prunepilot-base:bookworm, made by docker/base.sh when missing]
#                e.g. python:3.11-slim where a registry is reachable
#   TORCH_INDEX  [https://download.pytorch.org/whl/cpu] the wheel index torch comes from
#   POSTGRES_IMAGE  [built here from docker/postgres on BASE_IMAGE] e.g. postgres:16
#   PIP_CERT     a CA bundle for pip, passed to the build as a secret (never in a layer)
#   SMOKE_PORT   [18000] the API's port on the host
#   SMOKE_CUDA   [0] 1: also build the CUDA image (CUDA_TORCH_INDEX [.../whl/cu128])
#   SMOKE_KEEP   [0] 1: leave the cluster running at the end
#   DOCKER       [docker] the Docker CLI; one that can build with BuildKit is picked
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROJECT="prunepilot-smoke"
PORT="${SMOKE_PORT:-18000}"
URL="http://127.0.0.1:$PORT"
BASE_IMAGE="${BASE_IMAGE:-prunepilot-base:bookworm}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
IMAGE="prunepilot:cpu"
PY="$ROOT/.venv/bin/python"
T0=$(date +%s)
SUMMARY=()

say() { printf '[smoke %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
note() { SUMMARY+=("$*"); say "$*"; }
die() { say "FAILED: $*"; exit 1; }

# --- the tools ---------------------------------------------------------------------------
DOCKER="${DOCKER:-docker}"
if ! "$DOCKER" buildx version >/dev/null 2>&1; then
    # A Docker CLI >= 23 builds with BuildKit only through the buildx plugin; the 20.10 CLI
    # of Debian's docker.io has BuildKit built in.
    for cand in /usr/bin/docker /bin/docker; do
        if [ -x "$cand" ] && "$cand" version --format '{{.Client.Version}}' 2>/dev/null \
            | grep -q '^20\.'; then
            DOCKER="$cand"
            break
        fi
    done
fi
export DOCKER DOCKER_BUILDKIT=1
if "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    die "neither 'docker compose' nor 'docker-compose' is installed"
fi
COMPOSE+=(-p "$PROJECT" -f docker/compose.yaml --profile cpu)
"$DOCKER" info >/dev/null 2>&1 || die "no Docker daemon ($DOCKER info failed)"
bash scripts/setup.sh >/dev/null   # the host's SDK, in .venv

SECRET=()
if [ -n "${PIP_CERT:-}" ] && [ -s "$PIP_CERT" ]; then
    SECRET=(--secret "id=pip_cert,src=$PIP_CERT")
fi

build() {  # build TAG [docker build args...]; prints the seconds it took
    local tag="$1" s
    shift
    s=$(date +%s)
    "$DOCKER" build -q "${SECRET[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" "$@" \
        >/tmp/prunepilot-smoke-build.log 2>&1 \
        || { tail -30 /tmp/prunepilot-smoke-build.log; die "docker build of $tag"; }
    echo $(( $(date +%s) - s ))
}
size() { "$DOCKER" image inspect -f '{{.Size}}' "$1" | numfmt --to=iec --suffix=B; }

# --- 1. build ----------------------------------------------------------------------------
say "1. build (docker: $DOCKER, base: $BASE_IMAGE, torch index: $TORCH_INDEX)"
if [ "$BASE_IMAGE" = "prunepilot-base:bookworm" ]; then
    bash docker/base.sh "$BASE_IMAGE"
fi
secs=$(build "$IMAGE" -f docker/Dockerfile --build-arg "TORCH_INDEX=$TORCH_INDEX" .)
note "build $IMAGE: ${secs} s (layers reused where nothing changed)"
secs=$(build "$IMAGE" -f docker/Dockerfile --build-arg "TORCH_INDEX=$TORCH_INDEX" .)
note "rebuild $IMAGE with nothing changed: ${secs} s"
if [ -z "${POSTGRES_IMAGE:-}" ]; then
    POSTGRES_IMAGE="prunepilot-postgres:local"
    secs=$(build "$POSTGRES_IMAGE" docker/postgres)
    note "build $POSTGRES_IMAGE: ${secs} s"
fi
export POSTGRES_IMAGE
if [ "${SMOKE_CUDA:-0}" = 1 ]; then
    secs=$(build prunepilot:cuda -f docker/Dockerfile \
        --build-arg "TORCH_INDEX=${CUDA_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}" .)
    cuda=$("$DOCKER" run --rm prunepilot:cuda python -c \
        "import torch; print(torch.version.cuda, torch.cuda.is_available())")
    note "build prunepilot:cuda: ${secs} s, $(size prunepilot:cuda); torch CUDA, available: $cuda"
fi
user=$("$DOCKER" run --rm "$IMAGE" id -un)
[ "$user" = prunepilot ] || die "the image runs as '$user', not as the prunepilot user"
torch_info=$("$DOCKER" run --rm "$IMAGE" python -c \
    "import torch, prunepilot; print(torch.__version__, 'cuda', torch.version.cuda)")
note "sizes: $IMAGE $(size "$IMAGE") (torch $torch_info), $POSTGRES_IMAGE $(size "$POSTGRES_IMAGE"), base $(size "$BASE_IMAGE"); runs as user '$user'"

# --- 2. the cluster ----------------------------------------------------------------------
TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
export PRUNEPILOT_TOKENS="$TOKEN=smoke" PRUNEPILOT_PORT="$PORT" PRUNEPILOT_IMAGE="$IMAGE"
export RAY_AUTH_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
export POSTGRES_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
export PRUNEPILOT_WORKER_LOST_TIMEOUT_S=180

teardown() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        say "the API's last log lines:"
        "${COMPOSE[@]}" logs --no-color --tail 60 api 2>&1 | sed 's/^/    /' || true
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        say "SMOKE_KEEP=1: the cluster is left running (${COMPOSE[*]} down -v to remove it)"
        return
    fi
    "${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    local left vols
    left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
    vols=$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
    say "6. torn down: $left containers and $vols volumes of $PROJECT left"
    [ "$left" = 0 ] && [ "$vols" = 0 ] || say "FAILED: the teardown left things behind"
    if [ "$rc" = 0 ]; then
        echo
        echo "== smoke summary ($(( $(date +%s) - T0 )) s in all) =="
        printf '  %s\n' "${SUMMARY[@]}"
        echo "  teardown: $left containers, $vols volumes left"
        echo "SMOKE PASSED"
    fi
}
trap teardown EXIT

say "2. compose up: postgres, ray-head, api, 2 cpu-workers"
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
s=$(date +%s)
"${COMPOSE[@]}" up -d --scale cpu-worker=2 >/dev/null 2>&1 \
    || { "${COMPOSE[@]}" up -d --scale cpu-worker=2; die "compose up"; }
ids() { "${COMPOSE[@]}" ps -q "$1"; }
for _ in $(seq 1 120); do
    ready=$(curl -fsS "$URL/readyz" 2>/dev/null || true)
    case "$ready" in *"4 nodes, 2 CPUs"*) break ;; esac
    sleep 2
done
case "$ready" in *"4 nodes, 2 CPUs"*) ;; *) die "the API never saw 4 Ray nodes with 2 CPUs: $ready" ;; esac
note "cluster ready in $(( $(date +%s) - s )) s: $ready"
for _ in $(seq 1 60); do
    states=$(for c in $(ids api) $(ids ray-head) $(ids cpu-worker) $(ids postgres); do
        "$DOCKER" inspect -f '{{.State.Health.Status}}' "$c"; done | sort | uniq -c | xargs)
    case "$states" in *starting*) sleep 2 ;; *) break ;; esac
done
note "health checks: $states"
case "$states" in *unhealthy*|*starting*) die "not every container is healthy: $states" ;; esac
for c in $(ids cpu-worker) $(ids ray-head); do
    mounts=$("$DOCKER" inspect -f '{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}' "$c")
    [ -z "$mounts" ] || die "a Ray node has a mount ($mounts): nothing may be shared on disk"
done
note "no volume on the Ray head or the workers: the API's /data is its own"

# --- 3. the demo job through the SDK -------------------------------------------------------
say "3. the demo job, submitted from the host with the SDK"
s=$(date +%s)
"$ROOT/.venv/bin/prunepilot" demo --url "$URL" --token "$TOKEN" | tee /tmp/prunepilot-smoke-demo.log \
    | sed 's/^/    /'
grep -q "sha256 ok" /tmp/prunepilot-smoke-demo.log || die "the demo downloaded nothing"
note "demo job: $(grep -m1 'job done in' /tmp/prunepilot-smoke-demo.log | xargs); whole demo $(( $(date +%s) - s )) s; artifacts sha256-checked and loaded with prunepilot.load"

# --- 4. a worker dies mid-search -------------------------------------------------------------
say "4. a second job; docker kill one worker container mid-search"
victim=$(ids cpu-worker | head -1)
out=$("$PY" docker/smoke_jobs.py kill-worker --url "$URL" --token "$TOKEN" --container "$victim") \
    || { echo "$out"; die "the job did not survive a killed worker"; }
note "kill-worker: $(echo "$out" | tail -1)"

# --- 5. the API restarts mid-job ---------------------------------------------------------------
say "5. a third job; docker restart the API container mid-job"
out=$("$PY" docker/smoke_jobs.py restart-api --url "$URL" --token "$TOKEN" \
    --container "$(ids api)" --expect-jobs 2) \
    || { echo "$out"; die "the job did not survive an API restart"; }
note "restart-api: $(echo "$out" | tail -1)"
