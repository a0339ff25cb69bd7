#!/usr/bin/env bash
# Runs every test suite: the Rust core (cargo test), the JavaScript API under Node (node --test),
# the same API under Bun, and the packages users install (release build, tarballs, a fresh app).
# Expects `node scripts/setup.mjs` to have run (npm test does that).
set -euo pipefail
cd "$(dirname "$0")/.."

# The napi build compiles for the host triple; testing for it too reuses that build.
host=$(rustc -vV | sed -n 's/^host: //p')

echo "== cargo test"
cargo test --target "$host"

echo "== tsc (the tests type-check under --strict)"
npx tsc -p __test__

echo "== node --test"
node --import tsx --test --test-reporter=spec --test-concurrency=2 --test-timeout=600000 __test__/*.spec.ts

echo "== bun"
npx bun run __test__/bun/smoke.ts

echo "== package (release build, tarballs in dist/)"
node scripts/package.mjs

echo "== package tests"
node --import tsx --test --test-reporter=spec --test-concurrency=2 --test-timeout=600000 __test__/package/*.spec.ts
