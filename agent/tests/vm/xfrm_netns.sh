#!/usr/bin/env bash
# Runs agent/tests/xfrm_netns.rs on a kernel with ESP, ip_vti and xfrm interfaces: the Debian
# 6.1 VM of ../shared/vm (the development kernel has none, so there the tests take their
# "refused" branches). Builds the test binary on the host, then boots the VM:
#
#   agent/tests/vm/xfrm_netns.sh [OUTDIR]
#
# In the VM the same tests install manual SAs and see them in the kernel, keep identical
# ones on a second install, remove them, and create / delete an xwan-owned VTI.
set -euo pipefail

if [[ ${XWAN_VM:-} != 1 ]]; then
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
	cd "$ROOT"
	BIN=$(cargo test --release -p xwan --test xfrm_netns --no-run --message-format=json 2>/dev/null |
		sed -n 's/.*"executable":"\([^"]*xfrm_netns[^"]*\)".*/\1/p' | tail -1)
	[[ -x $BIN ]] || { echo "could not build the xfrm_netns test binary" >&2; exit 2; }
	VM=${XWAN_VM_DIR:-$ROOT/../shared/vm}
	OUT=${1:-$(mktemp -d /tmp/xwan-xfrm-vm.XXXXXX)}
	exec "$VM/run-in-vm.sh" "$ROOT/agent/tests/vm/xfrm_netns.sh" "$OUT" "$BIN"
fi

# ---- in the VM
BIN=$1
uname -r
modprobe -a ip_vti esp4 esp6 xfrm_user xfrm_interface veth tun aes gcm 2>&1 || true
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"$BIN" --test-threads=1 --nocapture
