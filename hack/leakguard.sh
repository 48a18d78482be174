#!/usr/bin/env bash
# Proves that tests send nothing out of the machine: an nftables table on the uplink (the default
# route's interface) counts and drops packets to private ranges, except the machine's own
# resolver. `start` installs it, `check` fails if it counted anything, `stop` removes it.
set -euo pipefail
table=knet-leakguard
uplink=$(ip route show default | awk '/default/ {for (i=1;i<NF;i++) if ($i=="dev") print $(i+1); exit}')
resolvers=$(awk '/^nameserver/ && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf | paste -sd, -)
case "${1:-}" in
start)
  [ -n "$uplink" ] || { echo "leakguard: no default route, nothing to guard"; exit 0; }
  nft delete table inet $table 2>/dev/null || true
  allow=""
  [ -n "$resolvers" ] && allow="ip daddr != { $resolvers }"
  nft -f - <<NFT
table inet $table {
  counter leaks { }
  set private { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16 } }
  chain guard_output { type filter hook output priority -300; policy accept; oifname "$uplink" ip daddr @private $allow counter name leaks log prefix "knet-leakguard: " level warn drop; }
  chain guard_forward { type filter hook forward priority -300; policy accept; oifname "$uplink" ip daddr @private $allow counter name leaks log prefix "knet-leakguard: " level warn drop; }
}
NFT
  echo "leakguard: watching $uplink (resolver ${resolvers:-none} allowed)";;
check)
  nft list table inet $table >/dev/null 2>&1 || { echo "leakguard: table missing"; exit 1; }
  n=$(nft list counter inet $table leaks | awk '/packets/ {print $2}')
  if [ "${n:-0}" != "0" ]; then
    echo "leakguard: $n packets to private ranges tried to leave via $uplink (all dropped) — FAIL"
    dmesg 2>/dev/null | grep "knet-leakguard" | tail -5 || true
    exit 1
  fi
  echo "leakguard: 0 packets leaked via $uplink";;
stop)
  nft delete table inet $table 2>/dev/null || true;;
*) echo "usage: $0 start|check|stop" >&2; exit 2;;
esac
