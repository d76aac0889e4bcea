#!/usr/bin/env bash
# The README Quickstart on an emulated slow machine (issue 15): a fresh clone, its install and its
# first command, inside a cgroup capped at a fraction of one CPU, each phase timed.
#
#   sudo bash benchmarks/slow_quickstart.sh [CPU_FRACTION] [WORK_DIR]     (defaults: 0.52, /tmp/cnnrepro-slow)
#
# Calibrate the fraction first: the issue's slow machine trains torchvision's AlexNet at 12.3
# images/s (batch 32, 224 px); this script prints that figure inside the cap before the Quickstart
# (0.52 of one CPU gave 10.8-13.0 on the 2-core machine of 2026-12, which does 49.8 uncapped).
# Needs root and the cgroup CPU controller (v1 /sys/fs/cgroup/cpu, or v2 with "cpu" enabled).
set -euo pipefail
FRACTION=${1:-0.52}
WORK=${2:-/tmp/cnnrepro-slow}
SRC=$(cd "$(dirname "$0")/.." && pwd)
QUOTA=$(python3 -c "print(int(float('$FRACTION') * 100000))")

if [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then  # cgroup v1
  CG=/sys/fs/cgroup/cpu/cnnrepro-slow
  mkdir -p "$CG"
  echo 100000 > "$CG/cpu.cfs_period_us"
  echo "$QUOTA" > "$CG/cpu.cfs_quota_us"
else  # cgroup v2
  CG=/sys/fs/cgroup/cnnrepro-slow
  mkdir -p "$CG"
  echo "$QUOTA 100000" > "$CG/cpu.max"
fi
echo $$ > "$CG/cgroup.procs"  # this shell and everything it starts from here on
echo "capped at $FRACTION of one CPU ($CG)"

rm -rf "$WORK" && mkdir -p "$WORK"
git clone -q "$SRC" "$WORK/clone" && cd "$WORK/clone"
export CNNREPRO_CACHE="$WORK/cache"
unset WANDB_MODE CNNREPRO_DATA

# the Quickstart's command, read from the README as a user copies it
cmd=$(python3 - <<'PY'
text = open("README.md").read()
block = text[text.index("## Quickstart"):]
block = block[block.index("```bash") + len("```bash\n"):]
print(block.splitlines()[0])
PY
)
echo "README Quickstart: $cmd"
case "$cmd" in *" && cnnrepro fit"*) ;; *) echo "the Quickstart line has no ' && cnnrepro fit': update this script" >&2; exit 2 ;; esac

# the same command with a timestamp printed between its install and its fit (python, not bash's
# ${x/a/b}: bash 5.2 reads "&" in the replacement as the matched text)
timed=$(python3 -c "import sys; print(sys.argv[1].replace(' && cnnrepro fit', ' && date +INSTALLED:%s.%N && cnnrepro fit', 1))" "$cmd")
start=$(date +%s.%N)
bash -c "$timed" 2>&1 | tee "$WORK/quickstart.log"
end=$(date +%s.%N)
installed=$(grep -o 'INSTALLED:[0-9.]*' "$WORK/quickstart.log" | cut -d: -f2)

# calibration, after the install (the Quickstart's .venv has torchvision now): the cap's AlexNet speed
.venv/bin/python "$SRC/benchmarks/tv_alexnet_speed.py"
python3 -c "
s, i, e = $start, $installed, $end
print(f'install {i - s:.0f} s, demo + fit + table {e - i:.0f} s, total {e - s:.0f} s ({(e - s) / 60:.1f} min)')"
