#pragma once

#include <exception>
#include <string>
#include <string_view>

// The name every error message starts with, e.g. "server_simple: cannot listen on ...".
void set_program_name(std::string_view name);

// One line on stdout, written whole and flushed: lines from different threads never interleave,
// and a grading script reading through a pipe sees each line when it happens. The write blocks
// while the pipe is full: see common/log.cpp.
void log_line(std::string_view line);

// "PROGRAM: MESSAGE" on stderr.
void log_error(std::string_view message);

// Logs what went wrong and returns the exit code for a runtime failure (1).
int fail(const std::exception& error);
