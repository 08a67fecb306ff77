#!/usr/bin/env bash
# Look at an executive report in a real browser: full-page screenshots at a desktop and a narrow (phone) width,
# and the print layout (print-to-PDF, A4), with headless Chromium (Debian: apt-get install -y chromium).
# Not used by CI; the tests check the HTML itself.
#
#   bash scripts/report_screenshot.sh [REPORT_HTML] [OUT_DIR]
#
# REPORT_HTML defaults to the newest demo_project/data/reports/*/*/report.html; OUT_DIR to a `screenshots`
# folder beside it. Chromium cannot size a screenshot to the page, so it renders a tall window and the
# empty bottom is trimmed (the script fails if the page reaches the window's bottom: content cut off).
# Writes screenshot-1280.png, screenshot-600.png (widths: $REPORT_SCREENSHOT_WIDTHS), report.pdf and, with pdftoppm (poppler-utils),
# print-page-N.png per printed page.
set -euo pipefail
cd "$(dirname "$0")/.."
html="${1:-$(ls -1 demo_project/data/reports/*/*/report.html 2>/dev/null | sort | tail -1)}"
[ -n "$html" ] && [ -f "$html" ] || { echo "no report.html found (run the demo first, or pass a path)" >&2; exit 2; }
html="$(realpath "$html")"
out="$(realpath -m "${2:-$(dirname "$html")/screenshots}")"
mkdir -p "$out"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "no Chromium found: apt-get install -y chromium" >&2; exit 2; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile")
height="${REPORT_SCREENSHOT_HEIGHT:-16000}"
for width in ${REPORT_SCREENSHOT_WIDTHS:-1280 600}; do
  png="$out/screenshot-$width.png"
  "$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$png" "file://$html" 2>/dev/null
  .venv/bin/python - "$png" <<'PY'
import sys
import numpy as np
from PIL import Image

path = sys.argv[1]
image = Image.open(path).convert("RGB")
pixels = np.asarray(image).astype(int)
differs = np.abs(pixels - pixels[-1]).sum(axis=(1, 2)) > 0
last = int(np.nonzero(differs)[0].max()) if differs.any() else 0
if last >= image.height - 2:
    sys.exit(f"{path}: the page reaches the bottom of the window; raise REPORT_SCREENSHOT_HEIGHT")
image.crop((0, 0, image.width, last + 24)).save(path)
print(f"screenshot: {path} ({image.width}x{last + 24})")
PY
done
# Does the page scroll sideways at each width? A copy of the page reports its own scroll width.
probe="$profile/probe.html"
sed 's#</body>#<script>document.body.setAttribute("data-scroll-width", document.documentElement.scrollWidth)</script></body>#' \
  "$html" >"$probe"
for width in ${REPORT_SCREENSHOT_WIDTHS:-1280 600}; do
  scroll="$("$browser" "${flags[@]}" --window-size="$width,2000" --dump-dom "file://$probe" 2>/dev/null \
    | grep -o 'data-scroll-width="[0-9]*"' | grep -o '[0-9]*' || true)"
  if [ -n "$scroll" ] && [ "$scroll" -gt "$width" ]; then
    echo "width $width: the page is $scroll px wide: it scrolls sideways" >&2
  else
    echo "width $width: page width ${scroll:-?} px, no sideways scrolling"
  fi
done
"$browser" "${flags[@]}" --no-pdf-header-footer --print-to-pdf="$out/report.pdf" "file://$html" 2>/dev/null
echo "print: $out/report.pdf"
if command -v pdftoppm >/dev/null; then
  pdftoppm -r 60 -png "$out/report.pdf" "$out/print-page"
  echo "print pages: $(ls "$out"/print-page-*.png | wc -l) PNG(s) in $out"
fi
