#!/usr/bin/env bash
# Remakes docs/dashboard.png (operator view) and docs/dashboard-analyst.png (an
# analyst receiver with a job's centroids plotted) with the dashboard's browser
# test: a real local federation, Debian's headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
SMS_DASHBOARD_SCREENSHOT="$PWD/docs/dashboard.png" \
  .venv/bin/python -m pytest -q -m slow tests/service/test_dashboard.py \
  -k browser_shows_progress_blame_audit_and_plot
