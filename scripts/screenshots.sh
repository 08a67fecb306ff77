#!/usr/bin/env bash
# Look at what a person sees, in a real browser (headless Chromium; Debian: apt-get install -y chromium):
# the executive report at 1280 and 600 px wide (and printed, A4), and the Dagster UI pages of the
# project's assets (graph, model fit, registry, recommendation, report) at the same widths.
# Not used by CI; the tests check the HTML and the metadata themselves. Compare before/after by eye.
#
#   bash scripts/screenshots.sh [CONFIG] [OUT_DIR]
#
# CONFIG defaults to demo_project/mmm_pipeline.yaml (run scripts/demo.sh first); OUT_DIR to
# `screenshots` beside the config. The UI is started on 127.0.0.1 (port $SCREENSHOT_PORT, default 3457)
# on a copy of the project's Dagster instance and stopped by its PID when done (SIGTERM). Market
# partition: $SCREENSHOT_MARKET (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
config="$(realpath "${1:-demo_project/mmm_pipeline.yaml}")"
[ -f "$config" ] || { echo "no config at $config (run scripts/demo.sh first, or pass one)" >&2; exit 2; }
project="$(dirname "$config")"
out="$(realpath -m "${2:-$project/screenshots}")"
port="${SCREENSHOT_PORT:-3457}"
market="${SCREENSHOT_MARKET:-all}"
widths="${SCREENSHOT_WIDTHS:-1280 600}"
mkdir -p "$out"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "no Chromium found: apt-get install -y chromium" >&2; exit 2; }
profile="$(mktemp -d)"
ui_pid=""
cleanup() {
  if [ -n "$ui_pid" ] && kill -0 "$ui_pid" 2>/dev/null; then
    kill -TERM "$ui_pid"
    wait "$ui_pid" 2>/dev/null || true
  fi
  rm -rf "$profile"
}
trap cleanup EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile")

# 1. The report: the newest report.html of the project, via report_screenshot.sh (trims the empty bottom).
report="$(ls -1 "$project"/data/reports/*/*/report.html 2>/dev/null | sort | tail -1 || true)"
if [ -n "$report" ]; then
  REPORT_SCREENSHOT_WIDTHS="$widths" bash scripts/report_screenshot.sh "$report" "$out/report"
else
  echo "no report.html under $project/data/reports: skipping the report" >&2
fi

# 2. The Dagster UI of the project, on a copy of its instance: the copy turns off the UI's first-visit
# "join the community" dialog (instance setting nux.enabled), which would cover every screenshot, and
# keeps the UI's daemon from launching runs in the project's own instance.
home="$(PYTHONPATH=. .venv/bin/python -c 'import sys; from mmm_pipeline.config import load_config
print(load_config(sys.argv[1]).dagster_home)' "$config")"
cp -r "$home" "$profile/dagster_home"
printf '\nnux:\n  enabled: false\n' >>"$profile/dagster_home/dagster.yaml"
DAGSTER_HOME="$profile/dagster_home" .venv/bin/mmm-pipeline --config "$config" ui --port "$port" \
  >"$out/ui.log" 2>&1 &
ui_pid=$!
for _ in $(seq 1 240); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$ui_pid" 2>/dev/null || { echo "the UI stopped; see $out/ui.log" >&2; exit 1; }
  sleep 1
done
base="http://127.0.0.1:$port"
pages=(
  "asset-graph|$base/asset-groups"
  "model_fit|$base/assets/model_fit?partition=$market"
  "model_fit-checks|$base/assets/model_fit?view=checks&partition=$market"
  "model_registry|$base/assets/model_registry?partition=$market"
  "budget_recommendation|$base/assets/budget_recommendation?partition=$market"
  "budget_recommendation-checks|$base/assets/budget_recommendation?view=checks&partition=$market"
  "executive_report|$base/assets/executive_report?partition=$market"
)
mkdir -p "$out/ui"
for page in "${pages[@]}"; do
  name="${page%%|*}"
  url="${page#*|}"
  for width in $widths; do
    # the UI is a JavaScript app: give it virtual time to fetch and render before the shot
    "$browser" "${flags[@]}" --window-size="$width,2400" --virtual-time-budget=20000 \
      --screenshot="$out/ui/$name-$width.png" "$url" 2>/dev/null
    echo "screenshot: $out/ui/$name-$width.png"
  done
done
