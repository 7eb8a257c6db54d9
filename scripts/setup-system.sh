#!/usr/bin/env bash
# Debian packages that some tests use where they exist (and skip, with the reason, where they
# do not): PostgreSQL's server (tests/service/test_postgres.py) and headless Chromium with its
# WebDriver (tests/service/test_ui_browser.py). Idempotent; needs root and apt-get. Called by
# .ci/run; a failure here is reported and the tests that need a package skip.
set -uo pipefail

PACKAGES=(postgresql chromium chromium-driver)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-system: ${PACKAGES[*]} installed"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-system: not root or no apt-get: ${missing[*]} not installed (their tests skip)"
    exit 0
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "setup-system: warning: apt-get failed; the tests that need ${missing[*]} skip" >&2
fi
exit 0
