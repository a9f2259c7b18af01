#!/usr/bin/env bash
# Turns a raw `strace -f -ttt -T` trace of a server into one readable line per system call:
# the time since the first call, the thread (T1 is the main thread, T2... in order of birth),
# and what the call did: which descriptor, how many bytes, which client, which descriptors an
# epoll_wait returned, and how long a call that blocked waited. It starts where the server says
# it listens: what comes before is the dynamic loader and start-up.
# usage: condense_trace.sh RAW_TRACE
set -eu
awk '
function short(text) {  # the first quoted string of a call, as strace printed it
  if (match(text, /"([^"\\]|\\.)*"(\.\.\.)?/)) return " " substr(text, RSTART, RLENGTH)
  return ""
}
function thread(tid) {
  if (!(tid in names)) names[tid] = "T" (++threads)
  return names[tid]
}
function describe(tid, start, call, duration,    name, fd, ret, text, rest, fds) {
  name = call; sub(/\(.*/, "", name)
  fd = call; sub(/^[a-z0-9_]*\(/, "", fd); sub(/[,)].*/, "", fd)
  ret = call; sub(/.*\) *= /, "", ret); sub(/ <[0-9.]*>$/, "", ret)
  if (name == "accept4" || name == "accept") {
    text = name "(" fd ") = " ret
    if (match(call, /sin_port=htons\([0-9]+\)/)) {
      rest = substr(call, RSTART + 15, RLENGTH - 16)
      if (match(call, /inet_addr\("[^"]*"\)/)) text = text "  client " substr(call, RSTART + 11, RLENGTH - 13) ":" rest
    }
  } else if (name == "recvfrom" || name == "read" || name == "sendto" || name == "write") {
    text = name "(" fd ") = " ret short(call)
  } else if (name == "epoll_wait") {
    fds = ""
    rest = call
    while (match(rest, /u32=[0-9]+/)) { fds = fds " " substr(rest, RSTART + 4, RLENGTH - 4); rest = substr(rest, RSTART + RLENGTH) }
    text = "epoll_wait = " ret (fds != "" ? "  ready:" fds : "")
  } else if (name == "epoll_ctl") {
    rest = call; sub(/^epoll_ctl\([0-9]+, /, "", rest); sub(/, \{.*/, "", rest); sub(/, NULL.*/, "", rest)
    text = "epoll_ctl(" rest ")"
    if (match(call, /events=[A-Z|]+/)) text = text " " substr(call, RSTART + 7, RLENGTH - 7)
  } else if (name == "clone" || name == "clone3") {
    text = name " = " ret "  starts " thread(ret + 0)
  } else {
    text = name "(" fd ") = " ret
  }
  if (ret ~ /^\? ERESTART/) return  # interrupted by a signal; strace shows the call again when it resumes
  if (duration >= 0.001) text = text sprintf("   [blocked %.3f s]", duration)
  lines[++count] = sprintf("%.6f\t%s  %s", start, thread(tid), text)
}
!started && !/"Listening for incoming/ { next }
{
  started = 1
  tid = $1; time = $2 + 0
  if (first == "") first = time
  thread(tid)
  rest = $0; sub(/^[0-9]+ +[0-9.]+ +/, "", rest)
  duration = -1
  if (match(rest, /<[0-9.]+>$/)) duration = substr(rest, RSTART + 1, RLENGTH - 2) + 0
  if (rest ~ /^--- SIG/) {
    split(rest, word, " ")
    lines[++count] = sprintf("%.6f\t%s  receives %s", time - first, names[tid], word[2])
  } else if (rest ~ /^--- stopped by/) {
    # the "receives SIGSTOP" line before it says so
  } else if (rest ~ /^\+\+\+ exited/) {
    lines[++count] = sprintf("%.6f\t%s  exits", time - first, names[tid])
  } else if (rest ~ /<unfinished \.\.\.>$/) {
    sub(/ *<unfinished \.\.\.>$/, "", rest)
    pending[tid] = rest; pending_start[tid] = time - first
  } else if (rest ~ /^<\.\.\. [a-z0-9_]+ resumed>/) {
    name = rest; sub(/^<\.\.\. /, "", name); sub(/ .*/, "", name)
    sub(/^<\.\.\. [a-z0-9_]+ resumed> */, "", rest)
    if ((tid in pending) && index(pending[tid], name "(") == 1) {
      describe(tid, pending_start[tid], pending[tid] rest, duration)
      delete pending[tid]
    }
  } else {
    describe(tid, time - first, rest, duration)
  }
}
END { for (i = 1; i <= count; ++i) print lines[i] }
' "$1" | sort -s -t "$(printf '\t')" -k1,1n | awk -F '\t' '{ printf "%10.6f  %s\n", $1, $2 }'
