#!/usr/bin/env bash
# Look at an executive report in a real browser: full-page PNG screenshots (desktop and narrow widths)
# and a print-to-PDF, with headless Chromium (Debian: apt-get install -y chromium). Not used by CI.
#
#   bash scripts/report_screenshot.sh [REPORT_HTML] [OUT_DIR]
#
# REPORT_HTML defaults to the newest demo_project/data/reports/*/*/report.html; OUT_DIR to the report's
# folder (screenshot-1280.png, screenshot-800.png, report.pdf). The page height is measured first (Chromium
# --dump-dom cannot measure it), so the screenshot height comes from the PDF page count is not used:
# we pass a height generous enough for the whole page and crop nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
html="${1:-$(ls -1 demo_project/data/reports/*/*/report.html 2>/dev/null | sort | tail -1)}"
[ -n "$html" ] && [ -f "$html" ] || { echo "no report.html found (run the demo first, or pass a path)" >&2; exit 2; }
html="$(realpath "$html")"
out="$(realpath -m "${2:-$(dirname "$html")}")"
mkdir -p "$out"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "no Chromium found: apt-get install -y chromium" >&2; exit 2; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile")
height="${REPORT_SCREENSHOT_HEIGHT:-9000}"
for width in 1280 800; do
  "$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$out/screenshot-$width.png" \
    "file://$html" 2>/dev/null
  echo "screenshot: $out/screenshot-$width.png (${width}x${height})"
done
"$browser" "${flags[@]}" --no-pdf-header-footer --print-to-pdf="$out/report.pdf" "file://$html" 2>/dev/null
echo "print: $out/report.pdf"
