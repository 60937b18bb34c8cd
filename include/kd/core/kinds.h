#pragma once
/// @file
/// The few words kd's files and flags use to say what a run is. Text becomes an enum once, where
/// it enters (a config key, a flag, model.json, summary.json); everything past that compares enums,
/// and writing turns them back into the same words, so every file format is unchanged.
#include <array>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace kd {

/// What a model computes: class logits, or boxes (kd/models/effdet.h).
enum class Task { classify, detect };
/// Where a run's targets come from: labels alone (train), a frozen teacher (offline), a teacher
/// labelling unlabeled images too (semi), the student's earlier self (self), several teachers
/// that each know some of the classes (merge).
enum class Mode { train, offline, semi, self, merge };
/// What a teacher hands the student: its distributions, or its top class as a pseudo-label.
enum class Targets { soft, hard };

template <typename E>
struct KindNames;
template <>
struct KindNames<Task> {
  static constexpr std::string_view what = "task";
  static constexpr std::array<std::string_view, 2> names = {"classify", "detect"};
};
template <>
struct KindNames<Mode> {
  static constexpr std::string_view what = "mode";
  static constexpr std::array<std::string_view, 5> names = {"train", "offline", "semi", "self",
                                                            "merge"};
};
template <>
struct KindNames<Targets> {
  static constexpr std::string_view what = "targets";
  static constexpr std::array<std::string_view, 2> names = {"soft", "hard"};
};

template <typename E>
constexpr std::string_view to_string(E e) {
  return KindNames<E>::names[static_cast<size_t>(e)];
}

/// "classify or detect", "train, offline, semi, self or merge".
template <typename E>
std::string kind_choices() {
  const auto& n = KindNames<E>::names;
  std::string out;
  for (size_t i = 0; i < n.size(); ++i)
    out += std::string(i == 0 ? "" : i + 1 == n.size() ? " or " : ", ") + std::string(n[i]);
  return out;
}

/// False when `text` names no value of E.
template <typename E>
bool try_parse(std::string_view text, E& out) {
  const auto& n = KindNames<E>::names;
  for (size_t i = 0; i < n.size(); ++i)
    if (n[i] == text) {
      out = static_cast<E>(i);
      return true;
    }
  return false;
}

/// Throws kd::Error: "WHERE: mode 'x': expected train, offline, semi, self or merge".
template <typename E>
E parse_kind(std::string_view text, std::string_view where);
extern template Task parse_kind<Task>(std::string_view, std::string_view);
extern template Mode parse_kind<Mode>(std::string_view, std::string_view);
extern template Targets parse_kind<Targets>(std::string_view, std::string_view);

/// JSON holds the words; reading an unknown word throws kd::Error naming it.
void to_json(nlohmann::json& j, Task v);
void to_json(nlohmann::json& j, Mode v);
void to_json(nlohmann::json& j, Targets v);
void from_json(const nlohmann::json& j, Task& v);
void from_json(const nlohmann::json& j, Mode& v);
void from_json(const nlohmann::json& j, Targets& v);

}  // namespace kd

/// @cond
// fmt prints the words: fmt::format("mode {}", Mode::semi) is "mode semi".
template <typename E>
struct KdKindFormatter : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(E e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(kd::to_string(e), ctx);
  }
};
template <>
struct fmt::formatter<kd::Task> : KdKindFormatter<kd::Task> {};
template <>
struct fmt::formatter<kd::Mode> : KdKindFormatter<kd::Mode> {};
template <>
struct fmt::formatter<kd::Targets> : KdKindFormatter<kd::Targets> {};
/// @endcond
