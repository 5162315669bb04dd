// Small text helpers for flag values.
#pragma once
#include <cctype>
#include <sstream>
#include <string>
#include <vector>

namespace pae {

/// "a,b,,c" -> {"a", "b", "c"}: the non-empty items between separators.
inline std::vector<std::string> split_list(const std::string& text, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

/// {"a", "b", "c"} -> "a, b or c" (with last = " or "), or "a, b, c" (last = ", ").
inline std::string joined(const std::vector<std::string>& names, const std::string& last = " or ") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
  return out;
}

/// A name made safe for a file name: every character but letters, digits, '-' and '_' becomes '_'
/// ("mnist:test" -> "mnist_test"; OoD score files are named so).
inline std::string file_safe(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  return s;
}

}  // namespace pae
