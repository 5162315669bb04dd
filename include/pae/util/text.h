// Small text helpers for flag values.
#pragma once
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

}  // namespace pae
