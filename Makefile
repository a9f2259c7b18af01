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
ifneq ($(SANITIZE),)
comma := ,
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

# Adding a program: put its main.cpp in NAME/ and add NAME here.
PROGRAMS := server_simple server_threads server_epoll client_questions async_sync
PROGRAM_BINS := $(PROGRAMS:%=$(BIN)/%) $(BIN)/loadgen

COMMON_OBJS := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard common/*.cpp))
TEST_OBJS := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard tests/*.cpp))
TEST_BIN := $(BUILD)/sphinx_tests

GTEST_LIBS = $(shell pkg-config --libs gtest_main 2>/dev/null)

# The run-* scenario (README, "The lab's task"), which ends with its timeline.
PORT ?= 1234
CLIENTS ?= 3
DELAY ?= 2
QUESTIONS ?= 10
SEED ?=

.PHONY: all test fuzz bench clean lint format help compare trace-simple trace-threads trace-async run-simple run-threads run-async run-async-sync timeline
.DEFAULT_GOAL := all

all: $(PROGRAM_BINS)

$(BUILD)/common.a: $(COMMON_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BIN)/%: $(BUILD)/%/main.o $(BUILD)/common.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

$(BIN)/loadgen: $(BUILD)/bench/loadgen.o $(BUILD)/common.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDFLAGS)

# A test seam: a library the tests load into server_epoll with LD_PRELOAD to make epoll_ctl
# fail. Built without the sanitizers; under AddressSanitizer, whose runtime must be loaded
# first, those tests skip.
SHIM := $(BUILD)/tests/shims/epoll_ctl_fail.so
$(SHIM): tests/shims/epoll_ctl_fail.cpp
	@mkdir -p $(@D)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -Wpedantic $(WERROR) -shared -fPIC $< -o $@ -ldl

$(BUILD)/tests/%.o: CPPFLAGS += -DBIN_DIR='"$(CURDIR)/$(BIN)"' -DSOURCE_DIR='"$(CURDIR)"'
$(BUILD)/tests/%.o: CPPFLAGS += -DEPOLL_CTL_FAIL_SHIM='"$(CURDIR)/$(SHIM)"'

$(TEST_BIN): $(TEST_OBJS) $(BUILD)/common.a | $(SHIM)
	@pkg-config --exists gtest_main || { echo "GoogleTest is missing: apt-get install -y libgtest-dev pkg-config" >&2; exit 1; }
	$(CXX) $(CXXFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDFLAGS)

# Ends with a plain "N passed, N failed[, N skipped]" line for CI to read.
test: all $(TEST_BIN)
	@$(TEST_BIN) $(GTEST_ARGS) | tee $(BUILD)/test.log; status=$${PIPESTATUS[0]}; \
	count() { sed -n "s/^\[  $$1 *\] \([0-9]*\) tests\{0,1\}[.,].*/\1/p" $(BUILD)/test.log | tail -1; }; \
	passed=$$(count PASSED); failed=$$(count FAILED); skipped=$$(count SKIPPED); \
	echo "$${passed:-0} passed, $${failed:-0} failed$${skipped:+, $$skipped skipped}"; \
	exit $$status

run-simple: $(BIN)/server_simple $(BIN)/client_questions
	@bash scripts/run_scenario.sh $(BIN) server_simple "$(PORT)" "$(CLIENTS)" "$(DELAY)" "$(QUESTIONS)" "$(SEED)"

run-threads: $(BIN)/server_threads $(BIN)/client_questions
	@bash scripts/run_scenario.sh $(BIN) server_threads "$(PORT)" "$(CLIENTS)" "$(DELAY)" "$(QUESTIONS)" "$(SEED)"

run-async: $(BIN)/server_epoll $(BIN)/client_questions
	@bash scripts/run_scenario.sh $(BIN) server_epoll "$(PORT)" "$(CLIENTS)" "$(DELAY)" "$(QUESTIONS)" "$(SEED)"

# The three run-* scenarios with a short DELAY, drawn on one time axis into docs/timeline.png.
timeline: $(BIN)/server_simple $(BIN)/server_threads $(BIN)/server_epoll $(BIN)/client_questions
	@bash scripts/timeline_picture.sh $(BIN)

# For the lecture: what changes between two patterns, and what each does in system calls.
A ?= simple
B ?= threads
PATTERNS := simple threads epoll
compare:
	@case " $(PATTERNS) " in *" $(A) "*) ;; *) echo "A must be one of: $(PATTERNS)" >&2; exit 2;; esac
	@case " $(PATTERNS) " in *" $(B) "*) ;; *) echo "B must be one of: $(PATTERNS)" >&2; exit 2;; esac
	@diff -u server_$(A)/main.cpp server_$(B)/main.cpp; test $$? -le 1

trace-simple: $(BIN)/server_simple $(BIN)/client_questions
	@bash scripts/trace.sh $(BIN) server_simple simple
trace-threads: $(BIN)/server_threads $(BIN)/client_questions
	@bash scripts/trace.sh $(BIN) server_threads threads
trace-async: $(BIN)/server_epoll $(BIN)/client_questions
	@bash scripts/trace.sh $(BIN) server_epoll async

# The pattern comparison (bench/run.sh); QUICK=1 for a short version, written under build/.
bench: $(BIN)/loadgen $(BIN)/server_simple $(BIN)/server_threads $(BIN)/server_epoll
	@bash bench/run.sh $(BIN) $(if $(QUICK),quick)

# libFuzzer targets (clang only): the framer and the command-line parser. New inputs found go to
# build/fuzz/corpus-NAME; the seeds are in tests/fuzz/corpus/NAME.
FUZZ_SECONDS ?= 10
FUZZ_CXX ?= clang++
FUZZERS := framer args

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
	$(FUZZ_CXX) -std=c++20 -g -O1 -I. -fsanitize=fuzzer,address,undefined $^ -o $@

# DELAY is passed on only when given: async_sync's own default is the lab's 3 s.
DELAY_GIVEN = $(filter command line environment,$(origin DELAY))
run-async-sync: $(BIN)/async_sync
	$(BIN)/async_sync sync $(if $(DELAY_GIVEN),--delay $(DELAY))
	$(BIN)/async_sync async $(if $(DELAY_GIVEN),--delay $(DELAY))

SOURCES = $(wildcard common/*.[ch]pp */main.cpp tests/*.[ch]pp tests/fuzz/*.cpp tests/shims/*.cpp bench/*.cpp)

lint:
	clang-format --dry-run -Werror $(SOURCES)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr --std=c++20 --language=c++ -I. $(filter %.cpp,$(SOURCES))
	printf '%s\n' $(filter %.cpp,$(SOURCES)) | xargs -P2 -I{} clang-tidy --quiet {} -- -I. -std=c++20 -DBIN_DIR='"bin"' -DSOURCE_DIR='"."' -DEPOLL_CTL_FAIL_SHIM='"shim.so"'

format:
	clang-format -i $(SOURCES)

clean:
	rm -rf $(BUILD) $(BIN)

help:
	@echo "make                 build every program into bin/"
	@echo "make test            build and run the GoogleTest suite"
	@echo "make run-simple      the lab's task scenario against server_simple"
	@echo "make run-threads     the same against server_threads"
	@echo "make run-async       the same against server_epoll"
	@echo "make run-async-sync  async_sync sync, then async_sync async"
	@echo "make timeline        the three run-* scenarios drawn on one time axis (docs/timeline.png)"
	@echo "make compare A=simple B=threads   the diff of two patterns' main.cpp (simple, threads, epoll)"
	@echo "make trace-simple    (trace-threads, trace-async) a server's system calls, condensed"
	@echo "make bench           the patterns measured side by side (QUICK=1: under a minute, into build/)"
	@echo "make fuzz            the libFuzzer targets for FUZZ_SECONDS=$(FUZZ_SECONDS) each"
	@echo "make lint            clang-format, cppcheck, clang-tidy"
	@echo "variables for run-*: PORT=$(PORT) CLIENTS=$(CLIENTS) DELAY=$(DELAY) QUESTIONS=$(QUESTIONS) SEED=$(SEED)"

.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
