#pragma once
/// @file
/// PyTorch weights by name, in and out: a state_dict saved from Python
/// (`torch.save(model.state_dict(), path)`, the zip format of PyTorch 1.6 and later) or the
/// parameters and buffers of a TorchScript module, loaded into a kd network whose module names
/// are the same (torchvision's and RepDistiller's architectures in `kd models`); and kd's weights
/// written so that `model.load_state_dict(torch.load(path))` takes them in Python.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace kd {

/// Names and tensors in file order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

/// Reads a state_dict file (or a TorchScript module's parameters and buffers). A checkpoint dict
/// holding the weights under `state_dict` or `model` is opened there, and a `module.` prefix on
/// every name (DataParallel) is dropped. Only what a state_dict holds is accepted (dicts, lists,
/// tensors, numbers, strings): a pickle that would build any other Python object is refused,
/// naming it, without running anything. kd::Error naming the file for anything else (the pre-1.6
/// format, a file without tensors, a damaged file).
StateDict read_state_dict(const std::string& path);

/// Writes `weights` atomically as a file torch.load reads as a dict of tensors.
void write_state_dict(const StateDict& weights, const std::string& path);

/// Copies `weights` into `into` (a model's state(): its parameters and buffers by name) by name.
/// Every missing, unexpected or mis-shaped name is listed in one kd::Error naming `source`;
/// nothing is changed then. Names in `may_differ` (a classifier head) that are mis-shaped keep
/// their values instead, and are returned.
std::vector<std::string> load_state_dict(const StateDict& into, const StateDict& weights,
                                         const std::string& source,
                                         const std::set<std::string>& may_differ = {});

}  // namespace kd
