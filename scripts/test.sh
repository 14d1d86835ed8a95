#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# checks formatting and lints, runs unit, property, simulator and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkg() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
if [ "$(id -u)" = 0 ]; then
  need_pkg ip iproute2           # network namespaces for the partition tests
  need_pkg iptables iptables      # loopback partitions in the chaos tests
  need_pkg promtool prometheus    # checks and unit tests of deploy/prometheus/alerts.yml
  need_pkg chromium chromium      # the web view's browser test (tests/e2e/ui_browser.rs)
  need_pkg chromedriver chromium-driver
  need_pkg systemd-analyze systemd  # checks deploy/systemd/shoal.service
  need_pkg busybox busybox-static  # the FROM-scratch image of the docker driver's tests
fi
# Schema check of deploy/k8s (Kubernetes schemas bundled, no cluster needed).
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install -q kubernetes-validate
# etcd-client (the benchmark's baseline worker pool) compiles protobufs at build time.
need_pkg protoc protobuf-compiler

# A full disk kills the linker with SIGBUS; say up front how much there is.
df -h . | tail -1 | awk '{print "== disk: " $4 " free of " $2}'
echo "== alert rules"
(cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml)
echo "== format"
cargo fmt --all --check
echo "== lint"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
echo "== planted bugs (each must be caught: proof that the checkers can fail)"
planted=(-p shoal-sim -p shoal-protocol --features planted-bugs --test tasks_bugs --test tasks_planted_bugs)
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run "${planted[@]}" --no-fail-fast
  cargo nextest run -p shoal-protocol --features planted-bugs --lib -E 'test(/planted/)'
else
  cargo test "${planted[@]}" --no-fail-fast
  cargo test -p shoal-protocol --features planted-bugs --lib planted
fi
echo "== deploy (static binary, FROM-scratch image, compose, Kubernetes, systemd)"
scripts/release.sh
deploy/systemd/verify.sh dist/shoal
deploy/k8s/validate.py
if docker info >/dev/null 2>&1; then
  docker build -q -f deploy/docker/Dockerfile -t shoal:ci . >/dev/null
  echo "image shoal:ci: $(docker image inspect -f '{{.Size}}' shoal:ci) bytes"
  docker rmi -f shoal:ci >/dev/null
  SHOAL_API_TOKEN=ci docker-compose -f deploy/compose/docker-compose.yml config -q
fi
# Skips itself, saying why, where Docker is absent.
if command -v cargo-nextest >/dev/null 2>&1; then
  SHOAL_STATIC_BIN=dist/shoal cargo nextest run -p shoal-tests -E 'test(/containers/)' --no-capture
else
  SHOAL_STATIC_BIN=dist/shoal cargo test -p shoal-tests --test e2e containers -- --nocapture
fi
