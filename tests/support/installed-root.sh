#!/bin/sh
# installed-root.sh WORKDIR DEB MODE COMMAND...
#
# Installs the Debian package DEB with dpkg into a throwaway copy of this
# machine's root file system (an overlay on a tmpfs at WORKDIR) and runs
# COMMAND chrooted into it. Run it in a mount namespace of its own (`ip
# netns exec` makes one; `unshare --mount` otherwise): every mount here,
# the overlay and what dpkg wrote into it, vanishes with that namespace, and
# the machine's own root, users and dpkg database are never changed.
#
# MODE "service" makes the copy look as portsight.service sees it before
# COMMAND runs: a private empty /tmp (PrivateTmp=) and the root remounted
# read-only (ProtectSystem=strict). MODE "admin" leaves it writable (dpkg).
set -eu
work=$1 deb=$2 mode=$3
shift 3
mount --make-rprivate /
mount -t tmpfs -o mode=0700 portsight-test "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
root=$work/root
cp "$deb" "$root/tmp/portsight.deb"
chroot "$root" dpkg -i /tmp/portsight.deb >"$work/dpkg.log" 2>&1 || {
    cat "$work/dpkg.log" >&2
    exit 1
}
rm "$root/tmp/portsight.deb"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
if [ "$mode" = service ]; then
    mount -t tmpfs -o mode=1777 tmp "$root/tmp"
    mount -o remount,bind,ro "$root"
fi
exec chroot "$root" "$@"
