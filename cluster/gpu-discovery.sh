#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript).
# Prints the GPUs this executor may use as Spark's ResourceInformation JSON:
#   {"name": "gpu", "addresses": ["0", "1"]}
# Under YARN with GPU isolation the container sees only its own devices, so
# listing what nvidia-smi shows is right; with no GPU (or no driver) the list is
# empty and Spark refuses a GPU executor with a clear message instead of hanging.
set -u
addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
    while IFS= read -r idx; do
        idx="${idx//[[:space:]]/}"
        [[ "$idx" =~ ^[0-9]+$ ]] || continue
        addresses="${addresses:+$addresses,}\"$idx\""
    done < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)
fi
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
