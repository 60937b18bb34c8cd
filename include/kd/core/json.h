#pragma once
/// @file
/// Integers read from JSON that comes from outside (model descriptions, checkpoints, COCO files,
/// split manifests, architecture options). nlohmann's get<int64_t>() casts a floating-point
/// number, which is undefined behaviour when it is out of range (1e300; found by
/// fuzz/model_spec); these accept only integer numbers within T's range and fail with one line.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kd/core/error.h"

namespace kd {

/// kd::Error when `text` is not valid UTF-8, which JSON (and so every summary, model description
/// and served answer) cannot hold: `what` names where it came from, and the message shows the
/// text with the bad bytes replaced. Checked where names enter (class folders, classes.txt),
/// before any work.
inline void check_utf8(const std::string& text, const std::string& what) {
  try {
    (void)nlohmann::json(text).dump();
  } catch (const nlohmann::json::type_error&) {
    fail("{} {}: not valid UTF-8; rename it", what,
         nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
  }
}

template <typename T>
T json_int(const nlohmann::json& v, const std::string& what) {
  if (!v.is_number_integer()) fail("{}: expected an integer, got {}", what, v.dump().substr(0, 40));
  constexpr auto lo = std::numeric_limits<T>::min();
  constexpr auto hi = std::numeric_limits<T>::max();
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) fail("{}: {} is out of range", what, u);
    return static_cast<T>(u);
  }
  const auto i = v.get<int64_t>();
  if ((std::is_signed_v<T> && i < static_cast<int64_t>(lo)) || (!std::is_signed_v<T> && i < 0) ||
      (static_cast<uint64_t>(hi) <= static_cast<uint64_t>(INT64_MAX) &&
       i > static_cast<int64_t>(hi)))
    fail("{}: {} is out of range", what, i);
  return static_cast<T>(i);
}

template <typename T>
std::vector<T> json_ints(const nlohmann::json& v, const std::string& what) {
  if (!v.is_array()) fail("{}: expected a list of integers, got {}", what, v.dump().substr(0, 40));
  std::vector<T> out;
  out.reserve(v.size());
  for (const auto& x : v) out.push_back(json_int<T>(x, what));
  return out;
}

}  // namespace kd
