#!/bin/sh
# Install the Debian packages named in $DEBS that are missing. As root: apt-get. Otherwise: one
# line with the exact command to run, and exit 1 (make stops there).
set -e
missing=""
for pkg in $DEBS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "vlaloop needs these Debian/Ubuntu packages:$missing (no apt-get here: install their equivalents)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages; run: sudo apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi
echo "installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends $missing >/dev/null
