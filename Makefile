# Sphinx servers: build, run, test. `make help` lists the targets.
SHELL := bash
CXX ?= g++
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++20 -Wall -Wextra -Wpedantic $(WERROR)
CPPFLAGS += -I. -MMD -MP
LDFLAGS += -pthread

BUILD := build
BIN := bin

# make test SANITIZE=address,undefined (or thread): everything, servers included, built with the
# sanitizers into a directory of its own; any report fails the run.
SANITIZE ?=
comma := ,
ifneq ($(SANITIZE),)
BUILD := build/sanitize-$(subst $(comma),-,$(SANITIZE))
BIN := $(BUILD)/bin
# Not vptr: on a cache miss it opens /proc/self/maps, which fails in the tests that exhaust a
# server's descriptors on purpose, and then reports a false "invalid vptr" in std::thread.
CXXFLAGS += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
CXXFLAGS += $(if $(findstring undefined,$(SANITIZE)),-fno-sanitize=vptr)
LDFLAGS += -fsanitize=$(SANITIZE) $(if $(findstring undefined,$(SANITIZE)),-fno-sanitize=vptr)
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS := halt_on_error=1:second_deadlock_stack=1
endif

# Adding a program: put its main.cpp in NAME/ and add NAME here. A server added to SERVERS also
# joins every test all servers share (tests/), make compare, make trace-* and make bench.
SERVERS := server_simple server_threads server_epoll
PROGRAMS := $(SERVERS) client_questions async_sync grade
PROGRAM_BINS := $(PROGRAMS:%=$(BIN)/%) $(BIN)/loadgen

COMMON_OBJS := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard common/*.cpp))
# tests/broken_server.cpp is a program of its own: servers broken on purpose, for grade's tests.
TEST_OBJS := $(patsubst %.cpp,$(BUILD)/%.o,$(filter-out tests/broken_server.cpp,$(wildcard tests/*.cpp)))
TEST_BIN := $(BUILD)/sphinx_tests
BROKEN_SERVER := $(BUILD)/broken_server

GTEST_LIBS = $(shell pkg-config --libs gtest_main 2>/dev/null)

# The run-* scenario (docs/RUNNING.md, "The lab's task"), which ends with its timeline.
PORT ?= 1234
CLIENTS ?= 3
DELAY ?= 2
QUESTIONS ?= 10
SEED ?=

.PHONY: all test grade grade-class exercise fuzz bench clean lint format help compare slides timeline trace-async run-simple run-threads run-async run-async-sync
.DEFAULT_GOAL := all

all: $(PROGRAM_BINS) compile_commands.json

$(BUILD)/common.a: $(COMMON_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BIN)/%: $(BUILD)/%/main.o $(BUILD)/common.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

# server_epoll's handlers and event-loop plumbing, beside its main.cpp.
$(BIN)/server_epoll: $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard server_epoll/*.cpp)) $(BUILD)/common.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

$(BIN)/loadgen: $(BUILD)/bench/loadgen.o $(BUILD)/bench/proc.o $(BUILD)/common.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

$(BIN)/grade: $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard grade/*.cpp)) $(BUILD)/common.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

$(BROKEN_SERVER): $(BUILD)/tests/broken_server.o $(BUILD)/common.a
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

# A test seam: a library the tests load into server_epoll with LD_PRELOAD to make epoll_ctl
# fail or epoll_wait report every event twice. Built without the sanitizers; under AddressSanitizer, whose runtime must be loaded
# first, those tests skip.
SHIM := $(BUILD)/tests/shims/epoll_seam.so
$(SHIM): tests/shims/epoll_seam.cpp
	@mkdir -p $(@D)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -Wpedantic $(WERROR) -shared -fPIC $< -o $@ -ldl

$(BUILD)/tests/%.o: CPPFLAGS += -DBIN_DIR='"$(CURDIR)/$(BIN)"' -DSOURCE_DIR='"$(CURDIR)"'
$(BUILD)/tests/%.o: CPPFLAGS += -DEPOLL_SEAM='"$(CURDIR)/$(SHIM)"'
$(BUILD)/tests/%.o: CPPFLAGS += -DBROKEN_SERVER='"$(CURDIR)/$(BROKEN_SERVER)"'

# The tests learn SERVERS at compile time; this file changes only when the list does, so a
# server added above rebuilds the one object that uses it.
$(BUILD)/tests/support.o: CPPFLAGS += -DSERVERS='"$(SERVERS)"'
$(BUILD)/tests/support.o: $(BUILD)/servers.txt
$(BUILD)/servers.txt: FORCE
	@mkdir -p $(@D)
	@echo '$(SERVERS)' | cmp -s - $@ || echo '$(SERVERS)' > $@
.PHONY: FORCE
FORCE:

$(TEST_BIN): $(TEST_OBJS) $(BUILD)/bench/proc.o $(BUILD)/server_epoll/connection.o $(BUILD)/common.a | $(SHIM)
	@pkg-config --exists gtest_main || { echo "GoogleTest is missing: apt-get install -y libgtest-dev pkg-config" >&2; exit 1; }
	$(CXX) $(CXXFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDFLAGS)

# SERVER_ARGS='--workers 2': words added to every server_epoll command line in the tests (the
# tests that cannot hold then skip, saying why). Through the environment, as the tests read it.
SERVER_ARGS ?=
export SERVER_ARGS

# Ends with a plain "N passed, N failed[, N skipped]" line for CI to read.
test: all $(TEST_BIN) $(BROKEN_SERVER)
	@$(TEST_BIN) $(GTEST_ARGS) | tee $(BUILD)/test.log; status=$${PIPESTATUS[0]}; \
	count() { sed -n "s/^\[  $$1 *\] \([0-9]*\) tests\{0,1\}[.,].*/\1/p" $(BUILD)/test.log | tail -1; }; \
	passed=$$(count PASSED); failed=$$(count FAILED); skipped=$$(count SKIPPED); \
	echo "$${passed:-0} passed, $${failed:-0} failed$${skipped:+, $$skipped skipped}"; \
	exit $$status

# make exercise N=K: the checks of exercise K in docs/EXERCISES.md (0 is the lab's task), with
# the shared tests it names. An exercise not yet started fails here, saying what is missing;
# make test skips its checks until it is started. It builds with a job per core, as make -j
# does, unless a -j was given.
EXERCISE_TESTS_0 := Exercise0.*:Servers/AllServers.CycleAsks*
EXERCISE_TESTS_1 := Exercise1.*:*/server_thread_per_client
EXERCISE_TESTS_2 := Exercise2.*
EXERCISE_TESTS_3 := Exercise3.*
EXERCISE_TESTS_4 := Exercise4.*:ServerEpoll.*:ServerEpollHandlers.*:*/server_epoll
EXERCISE_TESTS_5 := */Exercise5.*:Servers/*Sigterm*
CORES := $(shell nproc 2>/dev/null || echo 2)
exercise:
	@[ -n "$(EXERCISE_TESTS_$(N))" ] || { echo "usage: make exercise N=K, K from 0 to 5 (docs/EXERCISES.md)" >&2; exit 2; }
	@$(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j$(CORES)) all $(TEST_BIN)
	@SPHINX_EXERCISE=$(N) $(TEST_BIN) --gtest_brief=1 --gtest_filter='$(EXERCISE_TESTS_$(N))' $(GTEST_ARGS)

run-simple: $(BIN)/server_simple $(BIN)/client_questions
	@bash scripts/run_scenario.sh $(BIN) server_simple "$(PORT)" "$(CLIENTS)" "$(DELAY)" "$(QUESTIONS)" "$(SEED)"

run-threads: $(BIN)/server_threads $(BIN)/client_questions
	@bash scripts/run_scenario.sh $(BIN) server_threads "$(PORT)" "$(CLIENTS)" "$(DELAY)" "$(QUESTIONS)" "$(SEED)"

run-async: $(BIN)/server_epoll $(BIN)/client_questions
	@bash scripts/run_scenario.sh $(BIN) server_epoll "$(PORT)" "$(CLIENTS)" "$(DELAY)" "$(QUESTIONS)" "$(SEED)"

# grade against this repository's own servers and client: a demonstration and a smoke test.
GRADE_SERVER = $(BIN)/grade server --max-questions 10 --seed 42
GRADE_SERVED = {host} {port} --max-questions 10 --seed 42
grade: $(BIN)/grade $(BIN)/server_simple $(BIN)/server_threads $(BIN)/server_epoll $(BIN)/client_questions
	@echo "== server_simple"
	@$(GRADE_SERVER) --pattern simple -- $(BIN)/server_simple $(GRADE_SERVED)
	@echo "== server_threads --threads 4"
	@$(GRADE_SERVER) --pattern threads --threads 4 -- $(BIN)/server_threads $(GRADE_SERVED) --threads 4
	@echo "== server_epoll"
	@$(GRADE_SERVER) --pattern async -- $(BIN)/server_epoll $(GRADE_SERVED)
	@echo "== client_questions"
	@$(BIN)/grade client -- $(BIN)/client_questions {host} {port}
	@echo "== client_questions -e"
	@$(BIN)/grade client --error -- $(BIN)/client_questions {host} {port} -e
	@echo "== client_questions --cycle --delay 0.3"
	@$(BIN)/grade client --cycle --delay 0.3 -- $(BIN)/client_questions {host} {port} --cycle --delay 0.3

# make grade-class SUBMISSIONS=DIR JOBS=N: grade the server in every student directory of DIR,
# N at a time, into RESULTS (reports and gradebook.csv). SERVER runs in the student's directory.
JOBS ?= 2
RESULTS ?= build/grade-class
GRADE_ARGS ?= --pattern async --max-questions 10
SERVER ?= python3 server_asyncio.py {host} {port}
grade-class: $(BIN)/grade
	@[ -n "$(SUBMISSIONS)" ] || { echo "usage: make grade-class SUBMISSIONS=DIR [JOBS=N] [RESULTS=DIR] [GRADE_ARGS=...] [SERVER=...]" >&2; exit 2; }
	@bash scripts/grade_class.sh $(BIN)/grade '$(SUBMISSIONS)' '$(JOBS)' '$(RESULTS)' '$(GRADE_ARGS)' '$(SERVER)'

# The three run-* scenarios with a short DELAY, drawn on one time axis into docs/timeline.png.
timeline: $(BIN)/server_simple $(BIN)/server_threads $(BIN)/server_epoll $(BIN)/client_questions
	@bash scripts/timeline_picture.sh $(BIN)

# For the lecture: what changes between two patterns, and what each does in system calls.
A ?= simple
B ?= threads
PATTERNS := $(SERVERS:server_%=%)
compare:
	@case " $(PATTERNS) " in *" $(A) "*) ;; *) echo "A must be one of: $(PATTERNS)" >&2; exit 2;; esac
	@case " $(PATTERNS) " in *" $(B) "*) ;; *) echo "B must be one of: $(PATTERNS)" >&2; exit 2;; esac
	@diff -u server_$(A)/main.cpp server_$(B)/main.cpp; test $$? -le 1
	@case "$(A) $(B)" in *epoll*) echo "(the event loop rewrites the blocking stages of common/server.cpp:" \
	  "docs/SLIDES.md puts each beside its handler)" >&2;; esac

# docs/SLIDES.md: the blocking functions beside the event-loop handlers, cut from the sources.
slides:
	@bash scripts/slides.sh . > docs/SLIDES.md

# trace-PATTERN for every server_PATTERN (a pattern rule: not .PHONY, which would skip it).
trace-async: trace-epoll
trace-%: $(BIN)/server_% $(BIN)/client_questions
	@bash scripts/trace.sh $(BIN) server_$* $*

# The pattern comparison (bench/run.sh); QUICK=1 for a short version, written under build/.
bench: $(BIN)/loadgen $(SERVERS:%=$(BIN)/%)
	@SERVERS='$(SERVERS)' bash bench/run.sh $(BIN) $(if $(QUICK),quick)

# libFuzzer targets (clang only): the framer, the command-line parser and server_epoll's
# handlers. New inputs found go to build/fuzz/corpus-NAME; the seeds are in
# tests/fuzz/corpus/NAME.
FUZZ_SECONDS ?= 10
FUZZ_CXX ?= clang++
FUZZERS := framer args server_epoll

fuzz: $(FUZZERS:%=$(BUILD)/fuzz/%_fuzz)
	@for f in $(FUZZERS); do \
	  mkdir -p $(BUILD)/fuzz/corpus-$$f; \
	  echo "fuzzing $$f for $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz/$${f}_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    $(BUILD)/fuzz/corpus-$$f tests/fuzz/corpus/$$f 2>&1 | grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Done" ; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || exit 1; \
	done

$(BUILD)/fuzz/%_fuzz: tests/fuzz/%_fuzz.cpp common/cli.cpp common/protocol.cpp common/log.cpp
	@mkdir -p $(@D)
	$(FUZZ_CXX) -std=c++20 -g -O1 -I. -fsanitize=fuzzer,address,undefined $(filter %.cpp,$^) -o $@
$(BUILD)/fuzz/server_epoll_fuzz: server_epoll/connection.cpp server_epoll/connection.hpp tests/epoll_turn.hpp

# DELAY is passed on only when given: async_sync's own default is the lab's 3 s.
DELAY_GIVEN = $(filter command line environment,$(origin DELAY))
run-async-sync: $(BIN)/async_sync
	$(BIN)/async_sync sync $(if $(DELAY_GIVEN),--delay $(DELAY))
	$(BIN)/async_sync async $(if $(DELAY_GIVEN),--delay $(DELAY))

SOURCES = $(wildcard common/*.[ch]pp $(PROGRAMS:%=%/*.[ch]pp) tests/*.[ch]pp tests/fuzz/*.cpp tests/shims/*.cpp bench/*.[ch]pp)

# How each source is compiled, for clangd (go-to-definition, errors as you type) and clang-tidy.
# `make` rewrites it when the Makefile or the list of sources changes.
space := $(empty) $(empty)
CDB_FLAGS = $(subst $(space),$(comma)$(space),$(patsubst %,"%",$(CXX) $(filter-out -MMD -MP,$(CPPFLAGS)) $(CXXFLAGS)))
CDB_TEST_FLAGS = , "-DBIN_DIR=\"$(CURDIR)/$(BIN)\"", "-DSOURCE_DIR=\"$(CURDIR)\"", \
  "-DEPOLL_SEAM=\"$(CURDIR)/$(SHIM)\"", "-DBROKEN_SERVER=\"$(CURDIR)/$(BROKEN_SERVER)\"", \
  "-DSERVERS=\"$(SERVERS)\""
compile_commands.json: Makefile $(filter %.cpp,$(SOURCES))
	@{ echo '['; sep=''; for f in $(filter %.cpp,$(SOURCES)); do \
	  case $$f in tests/*) extra='$(CDB_TEST_FLAGS)';; *) extra='';; esac; \
	  printf '%s{"directory": "%s", "file": "%s",\n "arguments": [%s%s, "-c", "%s"]}' \
	    "$$sep" "$(CURDIR)" "$$f" '$(CDB_FLAGS)' "$$extra" "$$f"; sep=$$',\n'; \
	done; echo; echo ']'; } > $@

lint: compile_commands.json
	clang-format --dry-run -Werror $(SOURCES)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr --std=c++20 --language=c++ -I. $(filter %.cpp,$(SOURCES))
	printf '%s\n' $(filter %.cpp,$(SOURCES)) | xargs -P2 -I{} clang-tidy --quiet -p . {}

format:
	clang-format -i $(SOURCES)

clean:
	rm -rf $(BUILD) $(BIN)

help:
	@echo "make                 build every program into bin/"
	@echo "make test            build and run the GoogleTest suite"
	@echo "make exercise N=K    the checks of exercise K in docs/EXERCISES.md (0: the lab's task)"
	@echo "make run-simple      the lab's task scenario against server_simple"
	@echo "make run-threads     the same against server_threads"
	@echo "make run-async       the same against server_epoll"
	@echo "make run-async-sync  async_sync sync, then async_sync async"
	@echo "make timeline        the three run-* scenarios drawn on one time axis (docs/timeline.png)"
	@echo "make compare A=simple B=threads   the diff of two patterns' main.cpp ($(PATTERNS))"
	@echo "make slides          docs/SLIDES.md: the blocking code beside the epoll handlers"
	@echo "make trace-simple    (trace-threads, trace-async, trace-PATTERN) a server's system calls, condensed"
	@echo "make grade           bin/grade against this repository's own servers and client"
	@echo "make grade-class SUBMISSIONS=DIR JOBS=N   every student's server graded, a CSV gradebook"
	@echo "make bench           the patterns measured side by side (QUICK=1: under a minute, into build/)"
	@echo "make fuzz            the libFuzzer targets for FUZZ_SECONDS=$(FUZZ_SECONDS) each"
	@echo "make lint            clang-format, cppcheck, clang-tidy"
	@echo "variables for run-*: PORT=$(PORT) CLIENTS=$(CLIENTS) DELAY=$(DELAY) QUESTIONS=$(QUESTIONS) SEED=$(SEED)"

.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
