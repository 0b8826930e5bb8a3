#!/usr/bin/env bash
# Runs unet-dist across two "hosts" on this one machine: two network namespaces joined by a veth
# pair, mpirun in the first, the second reached through an rsh agent, ranks talking over TCP only.
# A multi-node rehearsal (and the test suite's multi-node test); needs root for `ip netns`.
#
#   launch/netns-cluster.sh -n 4 train --data DIR --run-dir DIR ...
#
# Ranks are split evenly over the two hosts. Everything it creates is removed on exit.
#
# UNET_DIST_QDISC shapes the link: a tc queueing discipline put on both ends of the veth pair
# (each end shapes what it sends), e.g. a 10 GbE-like link where the kernel has sch_netem,
#   UNET_DIST_QDISC="netem rate 10gbit delay 5us limit 10000" launch/netns-cluster.sh -n 2 bench ...
# or, with the token bucket filter alone (rate, no added delay; see docs/scaling.md),
#   UNET_DIST_QDISC="tbf rate 10gbit burst 32kb latency 5ms" launch/netns-cluster.sh -n 2 bench ...
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
n=2
if [ "${1:-}" = "-n" ]; then n="$2"; shift 2; fi
bin="${UNET_DIST_BIN:-$here/.build/release/unet-dist}"
tag="ud$$"
h1="${tag}a" h2="${tag}b"
subnet="10.77.0"
work="$(mktemp -d)"
cleanup() {
  ip netns del "$h1" 2>/dev/null || true
  ip netns del "$h2" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$h1"
ip netns add "$h2"
ip link add "${tag}v1" type veth peer name "${tag}v2"
ip link set "${tag}v1" netns "$h1"
ip link set "${tag}v2" netns "$h2"
ip -n "$h1" addr add "$subnet.1/24" dev "${tag}v1"
ip -n "$h2" addr add "$subnet.2/24" dev "${tag}v2"
for h in "$h1" "$h2"; do
  ip -n "$h" link set lo up
  # A lost link must end the job in seconds, not in TCP's default quarter of an hour
  # (tcp_retries2 15): with 5 retries, data that goes unanswered fails its connection after
  # about 13 s (0.2 s doubling). Only then does mpirun learn that it lost its daemon on the
  # other host, after the ranks' watchdog (--stall-timeout) has ended them, and end the job.
  ip netns exec "$h" sh -c 'echo 5 > /proc/sys/net/ipv4/tcp_retries2'
done
ip -n "$h1" link set "${tag}v1" up
ip -n "$h2" link set "${tag}v2" up
if [ -n "${UNET_DIST_QDISC:-}" ]; then
  # Unquoted on purpose: the value is tc's own words.
  ip netns exec "$h1" tc qdisc add dev "${tag}v1" root $UNET_DIST_QDISC
  ip netns exec "$h2" tc qdisc add dev "${tag}v2" root $UNET_DIST_QDISC
fi

# mpirun calls the agent as: agent [options] HOST COMMAND...; map the host to its namespace.
cat > "$work/agent" <<AGENT
#!/usr/bin/env bash
while [ "\${1#-}" != "\$1" ]; do shift; done
host="\$1"; shift
case "\$host" in
  $subnet.1) ns="$h1" ;;
  $subnet.2) ns="$h2" ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
# Its own UTS namespace too: a host name of its own, or Open MPI takes both hosts for one node.
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$ns; \$*"
AGENT
chmod +x "$work/agent"

first=$(( (n + 1) / 2 )) second=$(( n / 2 ))
flags=(--mca plm_rsh_agent "$work/agent" --mca btl tcp,self --mca btl_tcp_if_include "$subnet.0/24"
       --mca oob_tcp_if_include "$subnet.0/24" --host "$subnet.1:$first,$subnet.2:$second" --bind-to none
       --mca odls_base_sigkill_timeout 5)  # time to checkpoint on SIGTERM, as launch/local.sh
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
[ "$first" -gt "$(nproc)" ] && flags+=(--oversubscribe)
set +e
ip netns exec "$h1" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$h1" \
  mpirun "${flags[@]}" -n "$n" "$bin" "$@"
status=$?
exit $status
