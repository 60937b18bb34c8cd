#pragma once
// A model of kd's architectures for tests of whole-model transformations (export, the serving
// graph, INT8): seeded, in eval mode, with batch-norm statistics of its own, so that folding the
// batch norms into the convolutions is tested, not the identity.
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "kd/models/input.h"
#include "kd/models/model.h"

inline std::unique_ptr<kd::Model> test_model(const std::string& arch,
                                             std::vector<int64_t> input_shape, int classes) {
  kd::ModelSpec s;
  s.arch = arch;
  s.input_shape = std::move(input_shape);
  for (int c = 0; c < classes; ++c) s.class_names.push_back(std::to_string(c));
  s.norm = s.input_shape[0] == 1 ? kd::Normalization{{0.286}, {0.353}}
                                 : kd::Normalization{{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
  torch::manual_seed(3);
  auto m = kd::create_model(s);
  m->train(true);
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) m->forward(kd::random_input(s, 4));
  m->train(false);
  return m;
}
