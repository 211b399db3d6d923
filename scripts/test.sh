#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every test.
# Tests that need root (loop devices, mount namespaces, booting a container) skip elsewhere,
# saying why; with CI=true they never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --test
cargo test --workspace --locked "$@"
