#!/usr/bin/env bash
# make bench: breakwater against direct, a bare httputil.ReverseProxy,
# nginx, HAProxy and Caddy, under the same load, in one run. Writes
# bench/results.md. Extra arguments go to bench/runner (e.g. -only bw-full,nginx
# or -duration 5s); BENCH_ACCESS_LOG=0 turns every proxy's access log off.
set -euo pipefail
cd "$(dirname "$0")/.."

# Peers and wrk come from Debian's packages, installed only when absent.
# A peer that cannot be installed is reported as skipped in the table.
need=()
for cmd in nginx haproxy caddy wrk; do
	command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if ((${#need[@]})); then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "bench: installing ${need[*]}" >&2
		# Debian starts a package's service on install; a benchmark box wants
		# no nginx on :80. policy-rc.d says no to invoke-rc.d for the install.
		policy=/usr/sbin/policy-rc.d made_policy=""
		if [[ ! -e $policy ]]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
		fi
		peers() { for p in nginx haproxy caddy; do pgrep -x "$p" || true; done | sort; }
		before=$(peers)
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >&2 ||
			echo "bench: could not install every one of ${need[*]}; going on without" >&2
		[[ -n $made_policy ]] && rm -f "$policy"
		# Anything the install started anyway (no policy-rc.d honoured) is
		# stopped by its PID: only processes that were not there before.
		after=$(peers)
		for pid in $(comm -13 <(echo "$before") <(echo "$after")); do
			echo "bench: stopping $(cat /proc/"$pid"/comm 2>/dev/null) (pid $pid) started by the install" >&2
			kill "$pid" 2>/dev/null || true
		done
		if command -v systemctl >/dev/null 2>&1; then
			for svc in nginx haproxy caddy; do systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
		fi
	else
		echo "bench: ${need[*]} missing and cannot be installed here (not root or no apt-get); going on without" >&2
	fi
fi

dir=$(mktemp -d /tmp/breakwater-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "bench: building into $dir" >&2
go build -o "$dir/" ./bench/upstream ./bench/bareproxy ./bench/loadgen ./bench/runner
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/breakwater" .
access=true
[[ ${BENCH_ACCESS_LOG:-1} == 0 ]] && access=false
"$dir/runner" -bin "$dir" -peers bench/peers -dir "$dir" -out bench/results.md -access-log="$access" "$@"
