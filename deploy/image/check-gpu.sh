#!/usr/bin/env bash
# Boot-time check (keras-serving-gpu-check.service): the NVIDIA driver answers and sees a GPU. Exits
# non-zero with the reason on stderr otherwise, which the unit sends to the console and the journal.
set -o errexit -o nounset -o pipefail

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "keras-serving GPU CHECK FAILED: nvidia-smi is not installed (no NVIDIA driver in this image)" >&2
    exit 1
fi
if ! gpus="$(nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1)"; then
    echo "keras-serving GPU CHECK FAILED: nvidia-smi could not talk to the driver: $gpus" >&2
    exit 1
fi
if [ -z "$gpus" ]; then
    echo "keras-serving GPU CHECK FAILED: the driver sees no GPU (is this a GPU instance type?)" >&2
    exit 1
fi
echo "keras-serving GPU check passed:"
echo "$gpus"
