// Options structs that describe themselves: each struct has one `visit(OptionVisitor&)` that
// names every key once, with its default (the field's initial value), what values it accepts
// and when it applies. The config reads, checks and writes a struct through that one function
// (src/config.cpp's visitors), so a key is written out in one place only: its struct's file.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace pae {

/// What a key accepts and when it applies. Built by the functions below and refined fluently:
///   v("lr", lr, positive().resumable());
///   v("sigma", sigma, positive().applies_if(recon_loss == "gaussian", "it applies to recon_loss gaussian"));
struct Spec {
  /// What is expected, for errors: "{a n}" becomes "an integer" or "a number" and "{n}"
  /// "integer" or "number" by the field's type ("" = any value of the type).
  std::string expected;
  std::function<bool(double)> number_ok;            ///< numbers and each element of a list
  std::function<bool(const std::string&)> text_ok;  ///< strings
  bool nonempty = false;                            ///< lists: at least one element
  std::string unused;                               ///< why the key does not apply ("" = it does)
  bool may_change_on_resume = false;                ///< a resumed run may give another value

  /// The key applies only when `condition` holds; `why_not` completes "is not used ...: ".
  Spec applies_if(bool condition, const std::string& why_not) const;
  /// A resumed run may change it (how long, how fast, where: not what is trained).
  Spec resumable() const;
  /// Lists: at least one element.
  Spec not_empty() const;
};

Spec any_value();
Spec positive();                                        ///< > 0
Spec at_least(double low);                              ///< >= low
Spec in_range(double low, double high);                 ///< [low, high]
Spec in_half_open(double low, double high);             ///< [low, high)
Spec one_of(std::initializer_list<const char*> names);  ///< one of the names
Spec one_of(const std::vector<std::string>& names);
/// A rule of one's own: `ok` on the value (numbers) and the expected text.
Spec number_where(std::function<bool(double)> ok, const std::string& expected);
Spec text_where(std::function<bool(const std::string&)> ok, const std::string& expected);

/// Visits the keys of an options struct, in order. A key visited later may depend on the
/// values of keys visited before it (a reader has read them by then).
class OptionVisitor {
 public:
  virtual ~OptionVisitor() = default;
  virtual void operator()(const std::string& key, std::string& field, const Spec& spec) = 0;
  virtual void operator()(const std::string& key, int64_t& field, const Spec& spec) = 0;
  virtual void operator()(const std::string& key, uint64_t& field, const Spec& spec) = 0;
  virtual void operator()(const std::string& key, double& field, const Spec& spec) = 0;
  virtual void operator()(const std::string& key, bool& field, const Spec& spec) = 0;
  virtual void operator()(const std::string& key, std::vector<int64_t>& field, const Spec& spec) = 0;
};

}  // namespace pae
