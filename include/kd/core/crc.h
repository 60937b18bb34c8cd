#pragma once
/// @file
/// CRC-32 (zlib's) of files and byte ranges: how kd verifies what it reads back from its own
/// files (checkpoints, a run's model.pt, teacher-cache entries). LibTorch's zip reader checks no
/// CRC.
#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace kd {

uint32_t crc32_bytes(const void* data, size_t n, uint32_t crc = 0);
/// The file's CRC-32; its size goes to *size.
uint32_t file_crc32(const std::filesystem::path& p, uint64_t* size);

}  // namespace kd
