#!/usr/bin/env bash
# Install (if needed) Debian's chromium and chromium-driver for the playground's browser test.
# Source it: it exports DLFORGE_REQUIRE_BROWSER=1 so that the test fails rather than skips
# when the browser is missing.
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export DLFORGE_REQUIRE_BROWSER=1
echo "$(chromium --version) and $(chromedriver --version | cut -d' ' -f1-2) for the browser test"
