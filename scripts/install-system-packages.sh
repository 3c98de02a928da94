#!/bin/sh
# System packages the agent's tests and demo need, from Debian's archive.
# mosquitto: the broker the tests and the demo start on loopback; socat: serial pty pairs for Modbus RTU.
set -e
need=""
for pkg in mosquitto socat; do
    command -v "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $need
