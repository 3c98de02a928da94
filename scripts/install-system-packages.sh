#!/bin/sh
# System packages from Debian's archive, installed only when missing.
#   (no argument)  what the demo needs: mosquitto (the broker on loopback), socat (serial pty pairs for RTU)
#   --test         also what the tests need: tshark (Wireshark's C37.118 dissector, an independent check of
#                  our synchrophasor frames; not needed on a field unit), mbpoll (a Modbus master no one
#                  here wrote, reading the bench's registers as its manuals document them) and openssl (the
#                  test brokers' certificates, made by scripts/site-credentials; Priority: optional in
#                  Debian 12, so a minimal install may lack it).
#                  mosquitto_passwd, which scripts/site-credentials and the broker tests use, is in the
#                  mosquitto package itself on Debian 12 (not in mosquitto-clients).
#                  nats-server: the clustered broker tier's tests start a three-node cluster (docs/scale.md).
set -e
PATH="$PATH:/usr/sbin:/sbin"  # mosquitto lives in /usr/sbin, which a non-root PATH may lack
pkgs="mosquitto socat"
[ "${1:-}" = "--test" ] && pkgs="$pkgs tshark mbpoll openssl nats-server"
need=""
for pkg in $pkgs; do
    command -v "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "installing from Debian:$need"
$SUDO apt-get update -q
# noninteractive: wireshark-common asks whether non-root users may capture; the default (no) is right here.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
