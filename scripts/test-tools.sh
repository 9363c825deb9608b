#!/usr/bin/env bash
# The Debian packages the test suites need, in one place (npm test's "pretest" and .ci/run).
# As root with apt-get: installs what is missing and says what it installs. Otherwise: says
# what is missing; the root-only suites then report "skipped" with the reason.
# --check: only report (exit 1 when something is missing).
set -uo pipefail
need=()
for pair in ip:iproute2 iptables:iptables ipset:ipset curl:curl iperf3:iperf3 socat:socat ps:procps prlimit:util-linux stunnel4:stunnel4 haproxy:haproxy; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# Debian's python3-h2: the independent HTTP/2 client of the abuse suite (run as /usr/bin/python3).
/usr/bin/python3 -c 'import h2' >/dev/null 2>&1 || need+=(python3 python3-h2)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "${1:-}" = "--check" ]; then
  echo "test tools missing: ${need[*]}"
  exit 1
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the test tools: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null || { echo "apt-get install ${need[*]} failed"; exit 1; }
  exit 0
fi
echo "note: missing ${need[*]} (run as root with apt-get to install them; the suites that need them will say skipped)"
exit 0
