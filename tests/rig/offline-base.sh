#!/usr/bin/env bash
# The rig's offline JupyterLab base image is the one labship itself makes (`labship base`,
# and `up --local` when the base cannot be pulled): this runs the very recipe the binary
# embeds, so tests build on exactly what users get, under the same tag.
#
#   bash tests/rig/offline-base.sh [TAG]     (stdout: the tag; progress on stderr)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LABSHIP_BASE_HOME="${LABSHIP_BASE_HOME:-${LABSHIP_RIG_HOME:-${HOME:-/root}/.cache/labship-rig}}"
exec bash "$here/../../src/build/base/offline-base.sh" "$@"
