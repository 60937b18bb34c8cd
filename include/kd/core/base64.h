#pragma once
/// @file
/// Base64 (RFC 4648, standard alphabet, '=' padding optional, whitespace ignored) for images
/// sent inside JSON requests.
#include <string>
#include <string_view>

namespace kd {

/// kd::Error naming the offending position when `text` is not base64.
std::string base64_decode(std::string_view text);
std::string base64_encode(std::string_view bytes);

}  // namespace kd
