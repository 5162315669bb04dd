// NumPy .npy files (format 1.0/2.0/3.0, C order): float32, float64, uint8, int32, int64, bool.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace pae::data {

/// Reads an .npy file into a CPU tensor of the file's dtype and shape.
/// Errors name the file and what was wrong (magic, header, dtype, Fortran order, truncation).
at::Tensor read_npy(const std::string& path);

/// The same from a whole file's bytes (the fuzz target's way in); `source` names it in errors.
at::Tensor parse_npy(const std::string& bytes, const std::string& source);

/// Writes a tensor (any device; float32/float64/uint8/int32/int64/bool) as .npy, atomically.
void write_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace pae::data
