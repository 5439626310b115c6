#!/usr/bin/env bash
# Installs the real peers the test suite talks to (Debian packages), when
# they are missing: prometheus and promtool (Debian package prometheus);
# rsyslog with its TLS (gnutls) and RELP modules, the SIEM receiver of the
# forwarding tests; systemd-analyze, rpm, objcopy, adduser (the operator
# kit); python3 and openssl (the benchmark scripts); faketime (the calendar
# check, scripts/clock-ahead.sh); amtool (Debian package
# prometheus-alertmanager: checks examples/alertmanager.yml). Idempotent;
# needs root or sudo.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# The operator kit: systemd-analyze (unit checks), rpm (rpm -qpl on the
# .rpm), objcopy (stripping the packaged binary), adduser (the .deb's
# maintainer scripts).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v rpm >/dev/null 2>&1 || need+=(rpm)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
# The benchmark scripts (benches/): python3 drives them, openssl makes
# their certificates.
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The calendar check (scripts/clock-ahead.sh): libfaketime moves the
# tests' wall clock far ahead.
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# The Alertmanager example (examples/alertmanager.yml, docs/notifications.md)
# is checked with amtool.
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
have_module() { # rsyslog module files, wherever the multiarch dir is
  compgen -G "/usr/lib/*/rsyslog/$1.so" >/dev/null || compgen -G "/usr/lib/rsyslog/$1.so" >/dev/null
}
{ command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ]; } || need+=(rsyslog)
have_module lmnsd_gtls || need+=(rsyslog-gnutls)
have_module imrelp || need+=(rsyslog-relp)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-peers: need root to install: ${need[*]}" >&2; exit 1
  fi
fi
echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
