#include "kd/core/kinds.h"

#include "kd/core/error.h"

namespace kd {

template <typename E>
E parse_kind(std::string_view text, std::string_view where) {
  E out{};
  if (!try_parse(text, out))
    fail("{}{}{} '{}': expected {}", where, where.empty() ? "" : ": ", KindNames<E>::what, text,
         kind_choices<E>());
  return out;
}
template Task parse_kind<Task>(std::string_view, std::string_view);
template Mode parse_kind<Mode>(std::string_view, std::string_view);
template Targets parse_kind<Targets>(std::string_view, std::string_view);

namespace {
template <typename E>
void read(const nlohmann::json& j, E& v) {
  if (!j.is_string())
    fail("{}: expected a string, got {}", KindNames<E>::what, j.dump().substr(0, 40));
  v = parse_kind<E>(j.get<std::string>(), "");
}
}  // namespace

void to_json(nlohmann::json& j, Task v) { j = std::string(to_string(v)); }
void to_json(nlohmann::json& j, Mode v) { j = std::string(to_string(v)); }
void to_json(nlohmann::json& j, Targets v) { j = std::string(to_string(v)); }
void from_json(const nlohmann::json& j, Task& v) { read(j, v); }
void from_json(const nlohmann::json& j, Mode& v) { read(j, v); }
void from_json(const nlohmann::json& j, Targets& v) { read(j, v); }

}  // namespace kd
