#!/usr/bin/env python3
"""Offline checks of deploy/k8s (no cluster here): every manifest parses and,
with the `kubernetes-validate` package, matches the Kubernetes schemas
(strict: unknown fields fail); the kustomization names files that exist, and
every Secret key the StatefulSet mounts is one the kustomization generates.
Usage: deploy/k8s/validate.py [DIR]   (exit 0 = all good)"""

import os
import subprocess
import sys

import yaml


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def main(root):
    problems = []
    kustomization = load(os.path.join(root, "kustomization.yaml"))[0]
    manifests = [os.path.join(root, r) for r in kustomization.get("resources", [])]
    docs = {}
    for path in manifests:
        if not os.path.exists(path):
            problems.append(f"kustomization names missing resource {path}")
            continue
        for doc in load(path):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc

    generated = {}
    for gen in kustomization.get("secretGenerator", []):
        keys = {entry.split("=", 1)[0] for entry in gen.get("files", [])}
        keys |= {entry.split("=", 1)[0] for entry in gen.get("literals", [])}
        generated[gen["name"]] = keys

    sts = docs.get(("StatefulSet", "shoal"))
    if sts is None:
        problems.append("no StatefulSet shoal")
    else:
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        for key, value in spec["selector"]["matchLabels"].items():
            if labels.get(key) != value:
                problems.append(f"selector {key}={value} does not match the pod labels")
        if ("Service", spec["serviceName"]) not in docs:
            problems.append(f"serviceName {spec['serviceName']} names no Service")
        elif docs[("Service", spec["serviceName"])]["spec"].get("clusterIP") != "None":
            problems.append("the StatefulSet's Service is not headless")
        container = pod["containers"][0]
        probes = {p: container.get(p, {}).get("httpGet", {}).get("path")
                  for p in ("livenessProbe", "readinessProbe")}
        if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
            problems.append(f"probes are {probes}, want /healthz and /readyz")
        security = container.get("securityContext", {})
        if not security.get("readOnlyRootFilesystem") or not pod["securityContext"].get("runAsNonRoot"):
            problems.append("the container must run non-root on a read-only root filesystem")
        if not spec.get("volumeClaimTemplates"):
            problems.append("no volumeClaimTemplates: the store would not outlive the pod")
        for volume in pod.get("volumes", []):
            secret = volume.get("secret")
            if secret is None:
                continue
            keys = generated.get(secret["secretName"])
            if keys is None:
                problems.append(f"volume {volume['name']}: Secret {secret['secretName']} is not generated")
                continue
            for item in secret.get("items", []):
                if item["key"] not in keys:
                    problems.append(f"Secret {secret['secretName']} has no key {item['key']}")
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] not in generated.get(ref["name"], set()):
                problems.append(f"env {env['name']}: Secret {ref['name']} has no key {ref['key']}")

    pdb = [d for (kind, _), d in docs.items() if kind == "PodDisruptionBudget"]
    if not pdb or pdb[0]["spec"].get("maxUnavailable") != 1:
        problems.append("want a PodDisruptionBudget with maxUnavailable: 1")

    try:
        import kubernetes_validate  # noqa: F401
        out = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *manifests],
            capture_output=True, text=True)
        if out.returncode != 0:
            problems.append("schema check failed:\n" + out.stdout + out.stderr)
        schema = "checked against the Kubernetes schemas (kubernetes-validate --strict)"
    except ImportError:
        schema = "NOT checked against schemas (pip install kubernetes-validate)"

    for p in problems:
        print(f"deploy/k8s: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"deploy/k8s: {len(docs)} manifests parse, cross-references hold; {schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))))
