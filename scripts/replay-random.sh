#!/bin/sh
# Records seeded random programs (replay/tests/replay/random.c) under strace and replays each with
# `vmm replay --host --compare`, printing how many ended with exactly Linux's maps and the first
# line of each failure. Usage: scripts/replay-random.sh [FIRST_SEED [COUNT [CALLS [WRITE]]]]
# Needs gcc and strace; run from the repository (builds nothing but the C program; build vmm first).
set -eu
first=${1:-0}; count=${2:-100}; calls=${3:-200}; write=${4:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
vmm=${VMM:-$root/target/release/vmm}
[ -x "$vmm" ] || { echo "replay-random: no $vmm (cargo build --release first)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
gcc -O1 -o random "$root/replay/tests/replay/random.c"
gcc -shared -fPIC -O2 -o snapshot.so "$root/replay/tests/replay/snapshot.c"
ok=0; n=0
seed=$first
while [ "$seed" -lt $((first + count)) ]; do
    REPLAY_BEFORE=before REPLAY_AFTER=after strace -f -y \
        -e trace=memory,pkey_mprotect,mlock,mlock2,munlock,mlockall,munlockall,msync \
        -E LD_PRELOAD="$tmp/snapshot.so" -o raw ./random "$seed" "$calls" "$write" 2>/dev/null || true
    if [ -f after ]; then
        awk '/munmap\(0x5eed000, 0\)/ { on = 1; next } /munmap\(0xd0e0000, 0\)/ { on = 0 } on' raw > trace
        n=$((n + 1))
        if "$vmm" replay --host --maps before --trace trace --compare after >/dev/null 2>err; then
            ok=$((ok + 1))
        else
            echo "seed $seed: $(grep -v '^vmm: replayed' err | head -1)"
        fi
    fi
    rm -f before after raw trace err
    seed=$((seed + 1))
done
echo "replay-random: $ok of $n recorded programs replayed to exactly Linux's maps"
