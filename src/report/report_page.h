#pragma once
// The report page template (report.html) and Chart.js, compiled in at build time.
namespace kd {
extern const char* const kReportPage;
extern const char* const kChartJs;
}  // namespace kd
