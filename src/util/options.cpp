#include "pae/util/options.h"

#include <cstdio>
#include <utility>

#include "pae/util/text.h"

namespace pae {

namespace {

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

Spec Spec::applies_if(bool condition, const std::string& why_not) const {
  Spec s = *this;
  if (!condition && s.unused.empty()) s.unused = why_not;
  return s;
}

Spec Spec::resumable() const {
  Spec s = *this;
  s.may_change_on_resume = true;
  return s;
}

Spec Spec::not_empty() const {
  Spec s = *this;
  s.nonempty = true;
  return s;
}

Spec any_value() { return {}; }

Spec positive() {
  return number_where([](double v) { return v > 0; }, "a positive {n}");
}

Spec at_least(double low) {
  return number_where([low](double v) { return v >= low; }, "{a n} >= " + number_text(low));
}

Spec in_range(double low, double high) {
  return number_where([low, high](double v) { return v >= low && v <= high; },
                      "{a n} in [" + number_text(low) + ", " + number_text(high) + "]");
}

Spec in_half_open(double low, double high) {
  return number_where([low, high](double v) { return v >= low && v < high; },
                      "{a n} in [" + number_text(low) + ", " + number_text(high) + ")");
}

Spec one_of(const std::vector<std::string>& names) {
  return text_where(
      [names](const std::string& v) {
        for (const auto& n : names)
          if (v == n) return true;
        return false;
      },
      joined(names));
}

Spec one_of(std::initializer_list<const char*> names) {
  return one_of(std::vector<std::string>(names.begin(), names.end()));
}

Spec number_where(std::function<bool(double)> ok, const std::string& expected) {
  Spec s;
  s.number_ok = std::move(ok);
  s.expected = expected;
  return s;
}

Spec text_where(std::function<bool(const std::string&)> ok, const std::string& expected) {
  Spec s;
  s.text_ok = std::move(ok);
  s.expected = expected;
  return s;
}

}  // namespace pae
