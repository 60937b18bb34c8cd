#pragma once
// The pages kd serve serves, generated at build time from web/*.html: the prediction page (GET /)
// and the runs dashboard (GET /runs; Chart.js is put in at its /*KD_CHART_JS*/ marker).
namespace kd {
extern const char* const kWebPage;
extern const char* const kRunsPage;
}  // namespace kd
