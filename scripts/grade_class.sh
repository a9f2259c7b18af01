#!/usr/bin/env bash
# make grade-class: grades the server in every student directory of SUBMISSIONS, JOBS at a time,
# and writes into RESULTS, per student, NAME.txt (grade's report), NAME.err (its stderr: the
# server's tracebacks, capped) and NAME.json (Gradescope's results.json, which carries the
# points), then gradebook.csv: student, the points of each check, score, max_score, note.
#
#   bash scripts/grade_class.sh GRADE SUBMISSIONS JOBS RESULTS GRADE_ARGS SERVER
#
# SERVER is a shell command run in the student's directory ({host} and {port} as grade says);
# GRADE_ARGS are grade's options, split on spaces.
set -euo pipefail

if [ $# -ne 6 ] || [ ! -d "$2" ]; then
  echo "usage: grade_class.sh GRADE SUBMISSIONS JOBS RESULTS GRADE_ARGS SERVER" >&2
  echo "(make grade-class SUBMISSIONS=DIR JOBS=N)" >&2
  exit 2
fi
GRADE=$(realpath "$1")
submissions=$2
jobs=$3
RESULTS=$(mkdir -p "$4" && realpath "$4")
GRADE_ARGS=$5
SERVER=$6
export GRADE RESULTS GRADE_ARGS SERVER

# One student. Each grade runs apart (its own ports, its own processes), so N at once give the
# reports one at a time gives. Exit status 2 (could not grade) is tried once more: the port grade
# chose for the server can be taken, between its choice and the server's bind, by a connection of
# another job.
grade_one() {
  local dir=$1 name status
  name=$(basename "$dir")
  for attempt in 1 2; do
    status=0
    # shellcheck disable=SC2086 # GRADE_ARGS is a list of options
    (cd "$dir" && exec "$GRADE" server $GRADE_ARGS --gradescope "$RESULTS/$name.json" \
      -- sh -c "exec $SERVER") >"$RESULTS/$name.txt" 2>"$RESULTS/$name.err" || status=$?
    [ "$status" -eq 2 ] && [ "$attempt" -eq 1 ] || break
  done
  echo "$status" >"$RESULTS/$name.status"
}
export -f grade_one

students=()
for dir in "$submissions"/*/; do students+=("${dir%/}"); done
[ ${#students[@]} -gt 0 ] || { echo "grade_class.sh: no student directory in $submissions" >&2; exit 1; }
start=$(date +%s.%N)
printf '%s\0' "${students[@]}" | xargs -0 -n1 -P "$jobs" bash -c 'grade_one "$0"'

# The gradebook, from the results.json files: grade writes one test per line there.
tests() { sed -n 's/^ *{"name": "\([^"]*\)", "score": \([0-9]*\), "max_score": \([0-9]*\).*/\1 \2 \3/p' "$1"; }
checks=()
for dir in "${students[@]}"; do
  mapfile -t checks < <(tests "$RESULTS/$(basename "$dir").json" | cut -d' ' -f1)
  [ ${#checks[@]} -eq 0 ] || break
done
csv() { local text=${1//\"/\"\"}; printf '"%s"' "$text"; }
{
  printf 'student'
  printf ',%s' "${checks[@]}"
  printf ',score,max_score,note\n'
  for dir in "${students[@]}"; do
    name=$(basename "$dir")
    declare -A earned=()
    score=0 max=0
    while read -r check points most; do
      earned[$check]=$points
      score=$((score + points)) max=$((max + most))
    done < <(tests "$RESULTS/$name.json")
    csv "$name"
    for check in "${checks[@]}"; do printf ',%s' "${earned[$check]:-}"; done
    note=''
    [ "$(cat "$RESULTS/$name.status")" != 2 ] || note="could not grade: $(head -1 "$RESULTS/$name.err")"
    printf ',%s,%s,' "$score" "$max"
    csv "$note"
    printf '\n'
    unset earned
  done
} >"$RESULTS/gradebook.csv"
took=$(awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f", end - start }')
echo "${#students[@]} students graded, $jobs at a time, in $took s: $RESULTS/gradebook.csv" >&2
