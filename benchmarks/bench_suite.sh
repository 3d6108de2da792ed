#!/usr/bin/env bash
# The test suite of one commit, as CI runs it, from a clean clone (the virtual environment is
# built first and not timed):
#
#   benchmarks/bench_suite.sh REV time       `make test` timed (lint, types, pytest)
#   benchmarks/bench_suite.sh REV coverage   the line coverage of the package, measured by
#                                            coverage.py in every Python process the tests start
#                                            (CLI subprocesses and Dask workers: patch = subprocess)
#
# e.g. REV = ce36dfa (issue 11 filed), then HEAD; time them one after the other on a quiet
# machine ("one sitting"). Prints one JSON line; failed tests are counted, not fatal.
set -euo pipefail
rev=${1:?usage: bench_suite.sh REV time|coverage}
mode=${2:-time}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
sha=$(git -C "$repo" rev-parse --short "$rev")
dir=${TMPDIR:-/tmp}/suite-$sha
rm -rf "$dir"
git clone -q "$repo" "$dir"
git -C "$dir" checkout -q "$sha"
cd "$dir"
make -s .venv/.installed > /dev/null
seconds=null
cover=null
if [[ $mode == time ]]; then
    start=$(date +%s.%N)
    make -s test > test.log 2>&1 || true
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    summary=$(grep -E "^([0-9]+ failed, )?[0-9]+ passed" test.log | tail -1)
else
    .venv/bin/python -m pip install -q "coverage>=7.10"
    cat > .coveragerc.suite <<EOF
[run]
source = $dir/dmstore, $dir/conversion
parallel = true
patch = subprocess
data_file = $dir/.coverage
EOF
    # the commit's own pytest workers and scheduling (the options of its Makefile's pytest line)
    workers=$(grep -o -- "-n auto --dist [a-z]*\( --no-loadscope-reorder\)\?" Makefile || true)
    .venv/bin/coverage run --rcfile=.coveragerc.suite -m pytest -q -p no:cacheprovider $workers > cover.log 2>&1 || true
    summary=$(grep -E "^([0-9]+ failed, )?[0-9]+ passed" cover.log | tail -1)
    .venv/bin/coverage combine -q --rcfile=.coveragerc.suite
    .venv/bin/coverage report --rcfile=.coveragerc.suite > coverage.txt
    cover=$(tail -1 coverage.txt | awk '{print $NF}' | tr -d %)
fi
printf '{"rev": "%s", "mode": "%s", "make_test_s": %s, "pytest": "%s", "coverage_percent": %s}\n' \
    "$sha" "$mode" "$seconds" "$summary" "$cover"
