#pragma once
// The prediction page served at GET /, generated at build time from web/index.html.
namespace kd {
extern const char* const kWebPage;
}
