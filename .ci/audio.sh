#!/usr/bin/env bash
# Install (if needed) Debian's espeak-ng, which speaks the command words of the speech tests,
# example and benchmark (dlforge.data.speech_demo). Source it: it exports
# DLFORGE_REQUIRE_ESPEAK=1 so that the speech tests fail rather than skip when it is missing.
set -euo pipefail
if ! command -v espeak-ng >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
fi
export DLFORGE_REQUIRE_ESPEAK=1
echo "$(espeak-ng --version | cut -d' ' -f1-4) for the speech tests"
