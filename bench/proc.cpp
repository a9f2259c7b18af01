#include "bench/proc.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

namespace {
long status_field(const std::filesystem::path& status, std::string_view name) {
  std::ifstream in(status);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(name)) return std::stol(line.substr(name.size()));
  }
  return -1;
}

std::filesystem::path proc(pid_t pid) { return "/proc/" + std::to_string(pid); }
}  // namespace

long proc_status_field(pid_t pid, std::string_view name) {
  return status_field(proc(pid) / "status", name);
}

double proc_cpu_seconds(pid_t pid) {
  std::ifstream stat(proc(pid) / "stat");
  const std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  if (text.empty()) return 0;
  std::istringstream fields(text.substr(text.rfind(')') + 2));  // the name may hold spaces
  std::string field;
  for (int i = 3; i < 14; ++i) fields >> field;  // fields 3 to 13
  long user = 0;
  long system = 0;
  fields >> user >> system;  // fields 14 and 15, in clock ticks
  return static_cast<double>(user + system) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long proc_context_switches(pid_t pid) {
  long switches = 0;
  std::error_code ignored;
  for (const auto& task : std::filesystem::directory_iterator(proc(pid) / "task", ignored)) {
    switches += status_field(task.path() / "status", "voluntary_ctxt_switches:") +
                status_field(task.path() / "status", "nonvoluntary_ctxt_switches:");
  }
  return switches;
}
