#!/usr/bin/env bash
# crawlpairs node setup: the EMR bootstrap action and the Dataproc init action.
#
#   node-setup.sh ARTEFACTS_URI [ROLE]
#
# ARTEFACTS_URI is what `python cluster/package.py --upload URI` wrote, e.g.
# s3://bucket/crawlpairs/0.1.0 or gs://bucket/crawlpairs/0.1.0 (on Dataproc, where init
# actions get no arguments, the `crawlpairs-artefacts` cluster metadata). ROLE is auto
# (default), cpu, gpu or driver:
#   driver  the master: every stage's driver, the index stage   (core + download, score, index)
#   gpu     a node with an NVIDIA GPU: score executors             (core + download, score)
#   cpu     any other worker: extract, dedup, download executors    (core + download)
# Everything goes into one venv at $CRAWLPAIRS_PREFIX/venv (default /opt/crawlpairs/venv);
# the cluster definitions point PYSPARK_PYTHON there. pyspark itself is not installed:
# the cluster's Spark provides it. The project code is NOT installed for jobs: each job
# ships it with --py-files, so a new release needs no new cluster. (The wheel, when
# present, is installed on the master only, for the `crawlpairs` command.)
#
# CRAWLPAIRS_SETUP_DRY_RUN=1 prints the plan (platform, role, commands) and changes nothing.
set -euo pipefail

ARTEFACTS="${1:-}"
ROLE="${2:-${CRAWLPAIRS_NODE_ROLE:-auto}}"
PREFIX="${CRAWLPAIRS_PREFIX:-/opt/crawlpairs}"
DRY_RUN="${CRAWLPAIRS_SETUP_DRY_RUN:-0}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

log() { echo "crawlpairs-setup: $*" >&2; }
run() { echo "+ $*"; [ "$DRY_RUN" = 1 ] || "$@"; }

platform() {
    if [ -n "${CRAWLPAIRS_PLATFORM:-}" ]; then echo "$CRAWLPAIRS_PLATFORM"
    elif [ -f /mnt/var/lib/info/instance.json ]; then echo emr
    elif [ -x /usr/share/google/get_metadata_value ]; then echo dataproc
    else echo other; fi
}

is_master() {
    case "$PLATFORM" in
        emr) grep -Eq '"isMaster" *: *true' /mnt/var/lib/info/instance.json ;;
        dataproc) [ "$(/usr/share/google/get_metadata_value attributes/dataproc-role)" = Master ] ;;
        *) return 1 ;;
    esac
}

has_gpu() {
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then return 0; fi
    command -v lspci >/dev/null 2>&1 && lspci 2>/dev/null | grep -qi 'nvidia'
}

fetch() {  # URI DEST
    case "$1" in
        s3://*) run aws s3 cp --only-show-errors "$1" "$2" ;;
        gs://*) run gcloud storage cp "$1" "$2" ;;
        file://*) run cp "${1#file://}" "$2" ;;
        *) run cp "$1" "$2" ;;
    esac
}

pick_python() {  # a Python >= 3.11 (crawlpairs reads TOML with tomllib)
    local cand
    for cand in ${CRAWLPAIRS_PYTHON:-} python3.11 python3.12 /opt/conda/default/bin/python python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

PLATFORM="$(platform)"
if [ -z "$ARTEFACTS" ] && [ "$PLATFORM" = dataproc ]; then
    # Dataproc init actions take no arguments: the cluster's metadata names the folder.
    ARTEFACTS="$(/usr/share/google/get_metadata_value attributes/crawlpairs-artefacts || true)"
fi
if [ -z "$ARTEFACTS" ]; then
    log "usage: node-setup.sh ARTEFACTS_URI [auto|cpu|gpu|driver]"; exit 2
fi
ARTEFACTS="${ARTEFACTS%/}"
if [ "$ROLE" = auto ]; then
    if is_master; then ROLE=driver; elif has_gpu; then ROLE=gpu; else ROLE=cpu; fi
fi
case "$ROLE" in cpu|gpu|driver) ;; *) log "unknown role $ROLE (cpu, gpu, driver)"; exit 2 ;; esac
log "platform=$PLATFORM role=$ROLE artefacts=$ARTEFACTS prefix=$PREFIX"

PYTHON="$(pick_python || true)"
if [ -z "$PYTHON" ]; then
    # Amazon Linux 2023 (EMR 7) ships 3.9 as python3; 3.11 is one package away.
    run $SUDO dnf install -y -q python3.11 python3.11-pip
    PYTHON=python3.11
fi

run $SUDO mkdir -p "$PREFIX"
run $SUDO chown "$(id -un)" "$PREFIX"
for f in "requirements-$ROLE.txt" constraints.txt gpu-discovery.sh manifest.json; do
    fetch "$ARTEFACTS/$f" "$PREFIX/$f"
done
run chmod 755 "$PREFIX/gpu-discovery.sh"
run "$PYTHON" -m venv "$PREFIX/venv"
run "$PREFIX/venv/bin/pip" install -q --upgrade pip
run "$PREFIX/venv/bin/pip" install -q -r "$PREFIX/requirements-$ROLE.txt" -c "$PREFIX/constraints.txt"

if [ "$ROLE" = driver ] && [ "$DRY_RUN" != 1 ]; then
    wheel="$("$PREFIX/venv/bin/python" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next((f for f in m["files"] if f.endswith(".whl")), ""))' "$PREFIX/manifest.json")"
    if [ -n "$wheel" ]; then
        fetch "$ARTEFACTS/$wheel" "$PREFIX/$wheel"
        run "$PREFIX/venv/bin/pip" install -q --no-deps "$PREFIX/$wheel"
        run $SUDO ln -sf "$PREFIX/venv/bin/crawlpairs" /usr/local/bin/crawlpairs
    fi
fi

if [ "$ROLE" = gpu ] && [ "$PLATFORM" = emr ] && [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    # EMR 7 (cgroup v2): YARN's GPU isolation needs a cgroup-v1 devices hierarchy; the
    # GPU instance group's yarn-site / container-executor settings point at this mount.
    run $SUDO mkdir -p /spark-rapids-cgroup/devices
    if ! mountpoint -q /spark-rapids-cgroup/devices; then
        run $SUDO mount -t cgroup -o devices cgroupv1-devices /spark-rapids-cgroup/devices
    fi
    run $SUDO chmod a+rwx -R /spark-rapids-cgroup
fi
log "done: PYSPARK_PYTHON=$PREFIX/venv/bin/python"
