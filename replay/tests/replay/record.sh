#!/bin/sh
# Records a program's memory system calls for mm-replay: ./record.sh NAME COMMAND [ARGS...]
# writes NAME.before.maps, NAME.trace and NAME.after.maps here. The trace holds only the calls
# between the two snapshots (snapshot.c, preloaded, marks them with failing munmaps).
# Needs gcc and strace.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
name=$1; shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -shared -fPIC -O2 -o "$tmp/snapshot.so" "$here/snapshot.c"
REPLAY_BEFORE="$here/$name.before.maps" REPLAY_AFTER="$here/$name.after.maps" \
    strace -f -y -e trace=memory -E LD_PRELOAD="$tmp/snapshot.so" -o "$tmp/raw.trace" "$@"
# Keep the lines strictly between the markers.
awk '/munmap\(0x5eed000, 0\)/ { on = 1; next } /munmap\(0xd0e0000, 0\)/ { on = 0 } on' \
    "$tmp/raw.trace" > "$here/$name.trace"
wc -l "$here/$name.trace" "$here/$name.before.maps" "$here/$name.after.maps"
