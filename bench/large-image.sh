#!/usr/bin/env bash
# A larger real workload than `npm run bench` builds (docs/benchmarks.md,
# "Sixteenth round"): an ext4 image of /usr made with `mke2fs -d`, and a copy
# changed through a loop mount the way a guest changes its disk (files
# deleted, 4 KiB written into others, new files). Then `resync push` to
# `resync serve` against rsync --inplace to its daemon, alternating, and
# `resync delta` against `rdiff delta`, all over 127.0.0.1.
#
# Needs root (the loop mount), mke2fs, rsync, rdiff, GNU time, a built
# resync (npm run build) and about three times the image's data free in DIR.
#
#   bench/large-image.sh [DIR] [SIZE] [RUNS]    (defaults: /tmp/resync-large 9G 3)
#
# SERVE_MEMORY=1G (any size cgroups take) runs each receiving side, `resync
# serve` and the rsync daemon, in a memory cgroup of that size, with the page
# cache dropped before each push: the receiver's page cache is then bounded as
# on an image much larger than the machine's memory, and its reads of the
# image come from the disk.
set -euo pipefail
dir=${1:-/tmp/resync-large}
size=${2:-9G}
runs=${3:-3}
resync=$(cd "$(dirname "$0")/.." && pwd)/bin/resync.js
port=18731

cg=
if [ -n "${SERVE_MEMORY:-}" ]; then
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/resync-large-serve
    mkdir -p "$cg"
    echo "$SERVE_MEMORY" > "$cg/memory.max"
  else
    cg=/sys/fs/cgroup/memory/resync-large-serve
    mkdir -p "$cg"
    echo "$SERVE_MEMORY" > "$cg/memory.limit_in_bytes"
  fi
  echo "receivers in memory cgroup $cg ($SERVE_MEMORY), page cache dropped before each push"
fi
# Run a receiving side, in the cgroup when there is one. Called with `&` only:
# the background subshell becomes the program (exec), so `$!` is its pid.
receiver() {
  if [ -n "$cg" ]; then exec sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$cg" "$@"; else exec "$@"; fi
}
mkdir -p "$dir/mnt" "$dir/module"
cd "$dir"

if [ ! -f target.img ]; then
  echo "building basis.img ($size, ext4 of /usr) and target.img"
  mke2fs -q -F -t ext4 -b 4096 -d /usr basis.img "$size"
  cp --sparse=always basis.img target.img
  mount -o loop target.img mnt
  trap 'umount mnt 2>/dev/null || true' EXIT
  find mnt/lib -type f | sort | awk 'NR % 33 == 0' | head -4000 | xargs -r rm -f
  find mnt/share -type f -size +8k | sort | awk 'NR % 50 == 0' | head -2000 | while read -r f; do
    dd if=/dev/urandom of="$f" bs=4k count=1 seek=1 conv=notrunc status=none
  done
  mkdir -p mnt/newdata
  head -c 400M /dev/urandom > mnt/newdata/blob.bin
  cp -r /usr/share/doc mnt/newdata/doc
  umount mnt
  trap - EXIT
fi

(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > secret)
printf 'address = 127.0.0.1\nuse chroot = no\nlog file = %s/rsyncd.log\nlock file = %s/rsyncd.lock\nuid = 0\ngid = 0\n\n[vol]\npath = %s/module\nread only = no\n' "$dir" "$dir" "$dir" > rsyncd.conf

fresh() {
  rm -f "$1" "$1.resync-sig"
  cp --sparse=always basis.img "$1"
  sync
  if [ -n "$cg" ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

push_resync() {
  fresh vol.img
  receiver "$resync" serve --listen 127.0.0.1:0 --secret-file secret --volume v="$dir/vol.img:rw" 2> serve.log &
  local pid=$! p=
  for _ in $(seq 100); do p=$(grep -o 'listening on [^ ]*:[0-9]*' serve.log | grep -o '[0-9]*$' || true); [ -n "$p" ] && break; sleep 0.1; done
  /usr/bin/time -f "resync push: wall %e s, CPU %U+%S s, peak RSS %M KB" "$resync" push --secret-file secret target.img "127.0.0.1:$p/v" > /dev/null
  kill "$pid"; wait "$pid" 2> /dev/null || true
  cmp vol.img target.img
}

push_rsync() {
  fresh module/vol.img
  receiver rsync --daemon --no-detach --port "$port" --config rsyncd.conf &
  local pid=$!
  sleep 0.5
  /usr/bin/time -f "rsync --inplace: wall %e s, CPU %U+%S s, peak RSS %M KB" rsync --no-whole-file --inplace --ignore-times target.img "rsync://127.0.0.1:$port/vol/vol.img"
  kill "$pid"; wait "$pid" 2> /dev/null || true
  cmp module/vol.img target.img
}

for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then push_resync; push_rsync; else push_rsync; push_resync; fi
done
rm -f vol.img vol.img.resync-sig module/vol.img

bs=$("$resync" signature --json -f basis.img resync.sig 2> /dev/null | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).blockSize))')
/usr/bin/time -f "resync delta: wall %e s, peak RSS %M KB" "$resync" delta -f resync.sig target.img resync.delta > /dev/null
# As `npm run bench` calls it: rdiff's own strong sum length.
rdiff --block-size "$bs" signature basis.img rdiff.sig
/usr/bin/time -f "rdiff delta: wall %e s, peak RSS %M KB" rdiff delta rdiff.sig target.img rdiff.delta
echo "block size $bs"
ls -l resync.delta rdiff.delta
# The cgroup goes with the last receiver (a cgroup holding no process can be removed).
if [ -n "$cg" ]; then rmdir "$cg" 2> /dev/null || true; fi
