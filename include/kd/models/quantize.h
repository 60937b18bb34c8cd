#pragma once
/// @file
/// INT8 models: post-training static quantization of any kd model (kd's architectures and
/// TorchScript models alike) on LibTorch's oneDNN quantized engine. The network is traced,
/// batch norms are folded into the convolutions before them, observers are placed on every
/// tensor a quantized kernel will read (LibTorch's graph-mode passes: InsertObservers,
/// InsertQuantDeQuant, Finalize), calibration batches run through it, and the result is a
/// TorchScript module of quantized::conv2d(_relu) / quantized::linear(_relu) kernels on uint8
/// activations and per-channel int8 weights, which PyTorch Python loads as it is.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "kd/models/model.h"

namespace kd {

/// How activation ranges are taken from the calibration batches.
enum class Observer {
  minmax,      ///< the smallest and largest value seen
  percentile,  ///< per batch the 0.01 % and 99.99 % quantiles (outliers clipped), averaged
};
const char* to_string(Observer o);
Observer parse_observer(const std::string& word);  ///< kd::Error naming the choices

struct QuantizeOptions {
  Observer observer = Observer::minmax;
  /// Ops without an INT8 kernel run in fp32 between a dequantize and a quantize. Refused (an
  /// error naming them) unless allowed.
  bool allow_fp32_layers = false;
};

/// What the quantized model runs, from one forward pass with every op recorded.
struct QuantizedOps {
  std::vector<std::pair<std::string, int64_t>> int8;  ///< op name, calls: quantized kernels
  std::vector<std::pair<std::string, int64_t>> fp32;  ///< compute ops that ran on float tensors
};

/// Makes the oneDNN quantized engine LibTorch's current one; kd::Error when this LibTorch has
/// none (the error names the engines it has).
void use_int8_engine();
/// The activation range this CPU's INT8 kernels compute exactly: 8 bits (uint8 0..255) where
/// oneDNN's u8 x s8 kernels accumulate in 32 bits (AVX512-VNNI, AVX-VNNI), 7 bits (0..127,
/// PyTorch's reduce_range) where they add pairs of products in saturating 16-bit registers
/// (AVX2, AVX-512 without VNNI: 8-bit activations there gave 10-50 % relative error). Measured
/// once per process by a quantized convolution whose products overflow 16 bits, so it follows
/// what oneDNN really dispatches (ONEDNN_MAX_CPU_ISA included). Recorded in each INT8 model's
/// description as quantization.activation_bits.
int int8_activation_bits();
/// kd::Error naming `where` for a kd INT8 model whose activations this CPU's kernels would
/// saturate (calibrated with 8 bits where the kernels have VNNI, run where they have not).
void check_int8_runs_here(const ModelSpec& spec, const std::string& where);
/// The name of LibTorch's current quantized engine ("onednn", "qnnpack", ...).
std::string int8_engine();

/// Post-training static INT8 of `model` (CPU, eval mode; the model is not changed).
/// `next_batch(x)` fills x with the next calibration batch, float [N, C, H, W] pixels in [0, 1],
/// and returns false when there are no more. Returns a TorchScript model with the same input
/// and outputs as model.forward; its spec says precision int8 and how it was quantized.
/// kd::Error for calibration batches of the wrong shape, no batches, or (unless allowed) ops
/// left in fp32.
std::unique_ptr<Model> quantize_int8(Model& model,
                                     const std::function<bool(torch::Tensor&)>& next_batch,
                                     const QuantizeOptions& options, QuantizedOps* ops = nullptr);

/// Quantization-aware training: the model's network traced, batch norms folded, and fake
/// quantization (straight-through gradients) on every tensor INT8 kernels will read: per-channel
/// int8 weights from the weights themselves, uint8 activations from moving-average ranges taken
/// in training mode. A TorchScript model kd's trainer trains like any other (logit losses; its
/// graph has no named layers for feature losses). kd::Error as quantize_int8.
std::unique_ptr<Model> prepare_qat(Model& model);
/// The activation ranges stop moving (late in training, as the usual recipe does).
void freeze_observers(Model& qat);
/// The trained quantization-aware model as an INT8 model (the ranges it learned), as
/// quantize_int8 returns. kd::Error when `qat` does not come from prepare_qat.
std::unique_ptr<Model> convert_qat(Model& qat, const QuantizeOptions& options,
                                   QuantizedOps* ops = nullptr);

/// Runs `model` once on `x` and records which ops ran on quantized tensors and which on float
/// tensors (at::RecordFunction): how a test or a user sees that INT8 kernels really run.
QuantizedOps quantized_ops(Model& model, const torch::Tensor& x);

}  // namespace kd
