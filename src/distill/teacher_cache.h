#pragma once
// Teacher logits over a dataset, computed once and kept on disk. The key hashes the teacher's
// description and every parameter and buffer, and the dataset's pixels: change either and the
// key changes, so a stale entry can never be read.
#include <string>

#include <torch/types.h>

#include "kd/data/dataset.h"
#include "kd/models/model.h"

namespace kd {

std::string default_cache_dir();
std::string teacher_cache_key(Model& teacher, const Dataset& data);

struct CachedLogits {
  // [N, C] float16 on CPU: memory-mapped from the entry (teacher-KEY.f16) when it could be
  // written or read, else in memory. Rows of streamed images that failed to load are zeros.
  torch::Tensor logits;
  bool hit = false;
  std::string path;
};

// all_ranks: called by every data-parallel rank together; a miss on any rank is computed by all
// of them, each scoring its share (predict_logits_all_ranks), and rank 0 writes the entry.
CachedLogits cached_teacher_logits(Model& teacher, const Dataset& data, const std::string& dir,
                                   int64_t batch_size, torch::Device device,
                                   bool all_ranks = false);

}  // namespace kd
