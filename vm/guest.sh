#!/usr/bin/env bash
# Runs as root inside the VM that `cargo xtask vm-test` boots (Debian 12's kernel, this host's
# root filesystem read-only with throw-away overlays). Prepares what a bare kernel lacks for
# the data-plane tests, then runs each test binary built on the host.
#
#   Usage: guest.sh 'BINARY [ARGS...]'...   (one quoted word per binary; no spaces in paths)
#   Exit status: 0 when every command passed, else the first failure's exit status (1 for
#   network namespaces left behind).
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
uptime_s() { cut -d' ' -f1 /proc/uptime; }

echo "vm: Linux $(uname -r), $(nproc) vCPU, booted in $(uptime_s) s"
# The tests pin maps under a bpffs and open /dev/net/tun; nothing loads these at boot here.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
modprobe -a tun veth sch_ingress cls_bpf || echo "vm: warning: modprobe failed (see above)"

failed=()
status=0
for spec in "$@"; do
	read -r -a cmd <<<"$spec"
	name=$(basename "${cmd[0]}")
	start=$(uptime_s)
	echo "vm: START ${name%-*} (${cmd[*]:1})"
	"${cmd[@]}"
	rc=$?
	echo "vm: END ${name%-*}: exit $rc after $(awk -v a="$start" -v b="$(uptime_s)" 'BEGIN { printf "%.0f", b - a }') s"
	if ((rc != 0)); then
		failed+=("${name%-*}")
		((status)) || status=$rc
	fi
done
leftover=$(ip netns list)
if [[ -n $leftover ]]; then
	echo "vm: network namespaces left behind: $leftover"
	failed+=(leftover-netns)
	((status)) || status=1
fi
if ((${#failed[@]})); then
	echo "vm: FAILED: ${failed[*]}"
	exit "$status"
fi
echo "vm: all passed"
