#include "kd/serve/dashboard.h"

#include <set>
#include <sstream>

#include <fmt/format.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/report/report.h"
#include "kd/serve/service.h"
#include "responses.h"
#include "web_page.h"

namespace kd {
using serve_detail::json_response;

namespace {

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

HttpResponse html(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::move(body);
  return r;
}

// A report or curves request names at most this many runs: each costs a page section and a
// read of its files (3,000 copies of one run made a 20 MB page and 5 s of CPU).
constexpr size_t kMaxRuns = 100;
// Rendered reports kept, all together: a detection report is a few MB.
constexpr size_t kMaxCacheBytes = size_t{64} << 20;

// runs=A,B,...: each run once, in the order first named; empty when there are none or too many.
std::vector<std::string> split_runs(const std::string& param, std::string* error) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  std::stringstream ss(param);
  std::string rel;
  while (std::getline(ss, rel, ','))
    if (!rel.empty() && seen.insert(rel).second) out.push_back(rel);
  if (out.empty()) *error = "runs=A,B: which runs";
  if (out.size() > kMaxRuns) {
    *error = fmt::format("runs=: {} runs named; at most {} at a time", out.size(), kMaxRuns);
    out.clear();
  }
  return out;
}

}  // namespace

Dashboard::Dashboard(const std::string& root, const std::map<std::string, std::string>& served)
    : index_(root), page_(with_chart_js(kRunsPage)) {
  for (const auto& [source, model] : served) {
    std::error_code ec;
    const fs::path rel =
        fs::relative(fs::weakly_canonical(source, ec), fs::weakly_canonical(root), ec);
    if (!ec && !rel.empty() && *rel.begin() != "..") served_[rel.generic_string()] = model;
  }
}

HttpResponse Dashboard::page() const { return html(200, page_); }

HttpResponse Dashboard::index(const HttpRequest& req) {
  // The stamp changes whenever a file a row is read from does: an unchanged folder costs the
  // client one small 304 per refresh.
  auto inm = req.headers.find("if-none-match");
  std::string client_stamp;
  if (inm != req.headers.end() && inm->second.size() > 2 && inm->second.front() == '"' &&
      inm->second.back() == '"')
    client_stamp = inm->second.substr(1, inm->second.size() - 2);
  auto current = index_.index(client_stamp);
  if (!current) {
    HttpResponse r;
    r.status = 304;
    r.content_type = "application/json";
    r.headers.emplace_back("ETag", inm->second);
    return r;
  }
  nlohmann::json& doc = *current;
  for (auto& row : doc["runs"]) {
    auto it = served_.find(row["path"].get<std::string>());
    if (it != served_.end()) row["served"] = it->second;
  }
  HttpResponse r = json_response(200, doc);
  r.headers.emplace_back("ETag", "\"" + doc["stamp"].get<std::string>() + "\"");
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

HttpResponse Dashboard::curves(const std::string& runs_param) {
  std::string error;
  const auto rels = split_runs(runs_param, &error);
  if (rels.empty()) return json_response(400, {{"error", error}});
  try {
    return json_response(200, index_.curves(rels));
  } catch (const Error& e) {
    return json_response(404, {{"error", e.what()}});
  }
}

HttpResponse Dashboard::report(const std::string& runs_param) {
  // Only runs the index lists, by their path relative to the root: nothing else on disk.
  const auto known = index_.runs();
  std::string error;
  const auto rels = split_runs(runs_param, &error);
  if (rels.empty()) return html(400, "<!doctype html><p>" + escape_html(error) + "</p>");
  std::string key;
  std::vector<std::string> dirs;
  for (const auto& rel : rels) {
    key += rel + '\n';
    auto it = known.find(rel);
    if (it == known.end())
      return html(404,
                  "<!doctype html><p>no run '" + escape_html(rel) + "' under the runs folder</p>");
    dirs.push_back(it->second);
  }
  std::string stamp;
  for (const auto& dir : dirs)
    for (const char* file : {"summary.json", "metrics.jsonl"}) {  // a running run's metrics grow
      std::error_code ec;
      const auto t = fs::last_write_time(fs::path(dir) / file, ec);
      stamp += ec ? std::string("-,") : std::to_string(t.time_since_epoch().count()) + ",";
    }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end() && it->second.stamp == stamp) return html(200, it->second.page);
  }
  std::string page = render_report(collect_report(dirs, {}));
  std::lock_guard<std::mutex> lock(cache_mutex_);
  // Bounded in entries and in bytes; a page of its own larger than the bound is not kept.
  if (auto old = cache_.find(key); old != cache_.end()) {
    cache_bytes_ -= old->second.page.size();
    cache_.erase(old);
  }
  if (cache_.size() >= 64 || cache_bytes_ + page.size() > kMaxCacheBytes) {
    cache_.clear();
    cache_bytes_ = 0;
  }
  if (page.size() <= kMaxCacheBytes) {
    cache_bytes_ += page.size();
    cache_[key] = {stamp, page};
  }
  return html(200, page);
}

}  // namespace kd
