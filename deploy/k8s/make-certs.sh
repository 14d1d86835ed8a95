#!/usr/bin/env bash
# Makes the party CA (in ca/, keep it off the cluster) and the files the
# kustomization turns into the shoal-tls and shoal-api-token Secrets.
# Usage: deploy/k8s/make-certs.sh [PARTY]   (needs shoal on PATH or $SHOAL_BIN)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
party=${1:-k8s}
shoal=${SHOAL_BIN:-shoal}
"$shoal" ca bootstrap --party "$party" --dir "$here/ca" \
  --nodes shoal-0,shoal-1,shoal-2 --out "$here/certs"
cp "$here/ca/ca.pem" "$here/certs/ca.pem"
[ -s "$here/certs/api-token" ] ||
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$here/certs/api-token")
echo "certs in $here/certs; apply with: kubectl apply -k $here"
