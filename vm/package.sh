#!/usr/bin/env bash
# Runs inside the VM (`cargo xtask vm-test`, before the tests): installs the package `cargo
# xtask deb` built, as an operator would, and checks what it installed. The tests after it run
# the installed /usr/sbin/xwan (XWAN_BIN). The VM's /usr, /etc and /var/lib are throw-away
# overlays: nothing reaches the host.
#
#   Usage: package.sh DEB
set -euo pipefail
deb=$1
# man-db's trigger rebuilds the whole system's index, minutes under an emulated CPU; it runs
# only where this file exists (and the overlay is thrown away with the VM).
rm -f /var/lib/man-db/auto-update
dpkg -i "$deb"
dpkg -s xwan | grep -q '^Status: install ok installed$'
# Installed, never enabled or started.
test -x /usr/sbin/xwan
test -f /lib/systemd/system/xwan.service
if [ -e /etc/systemd/system/multi-user.target.wants/xwan.service ]; then
	echo "package.sh: installing enabled xwan.service" >&2
	exit 1
fi
/usr/sbin/xwan check --config /etc/xwan/xwan.toml >/dev/null
/usr/sbin/xwan --version
test -f /usr/share/man/man8/xwan.8.gz
test -f /usr/share/bash-completion/completions/xwan
test -f /usr/share/doc/xwan/examples/grafana/xwan.json
echo "package.sh: $(dpkg-query -W -f='${Package} ${Version}' xwan) installed; /etc/xwan/xwan.toml checks; $(dpkg -L xwan | wc -l) paths"
