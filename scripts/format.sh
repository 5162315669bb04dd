#!/usr/bin/env bash
# Applies .clang-format to every C++ file git tracks or would add; --check only reports (and fails on) files
# that are not formatted. .ci/run runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || scripts/setup.sh
mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.cpp' '*.h')
if [ "${1:-}" = "--check" ]; then
  if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/pae-format.$$; then
    grep -o '^[^:]*:[0-9]*' /tmp/pae-format.$$ | sort -u | head -20 >&2
    rm -f /tmp/pae-format.$$
    echo "format: the files above differ from .clang-format; run scripts/format.sh" >&2
    exit 1
  fi
  rm -f /tmp/pae-format.$$
  echo "format: ${#files[@]} files follow .clang-format"
else
  clang-format -i "${files[@]}"
fi
