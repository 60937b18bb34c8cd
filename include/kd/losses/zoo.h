#pragma once
/// @file
/// The distillation losses of the registry (registry.h) as pure functions of tensors. Logit
/// losses take student and teacher logits [B, C] (teacher detached inside); feature losses take
/// student and teacher features [B, ...] of one layer each. Every loss is averaged over the batch
/// and returns a scalar; tests/golden/make_zoo_golden.py computes each independently in PyTorch
/// Python from the paper.
#include <torch/types.h>

#include "kd/losses/registry.h"

namespace kd {

/// Sun et al. 2024: (z - mean(z)) / (std(z) + 1e-7) over each row's classes (unbiased std, as
/// in the authors' code).
torch::Tensor standardize_logits(const torch::Tensor& z);

/// T^2 KL(softmax(t/T) || softmax(s/T)), summed over classes, mean over the batch.
torch::Tensor kd_kl(const torch::Tensor& s, const torch::Tensor& t, double T);

/// alpha * TCKD + beta * NCKD at temperature T (Zhao et al. 2022, eq. 7); labels in [0, C).
torch::Tensor dkd_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& labels,
                       double alpha, double beta, double T);

/// beta * T^2 (1 - mean Pearson over samples) + gamma * T^2 (1 - mean Pearson over classes)
/// between softmax(s/T) and softmax(t/T) (Huang et al. 2022, eq. 9).
torch::Tensor dist_loss(const torch::Tensor& s, const torch::Tensor& t, double beta, double gamma,
                        double T);

/// Mean over T in {2, 3, 4, 5, 6} of: instance * T^2 KL
/// + batch * mean((P_t P_t^T - P_s P_s^T)^2) / B
/// + class * mean((P_t^T P_t - P_s^T P_s)^2) / C, P = softmax(z / T) (Jin et al. 2023, scaled as
/// their training code reduces it; the paper's sums are B^2 and C^2 times larger).
torch::Tensor mlkd_loss(const torch::Tensor& s, const torch::Tensor& t, double instance,
                        double batch, double cls);

/// FitNets: plain MSE, or (normalize) the squared distance of per-sample L2-normalised vectors.
torch::Tensor fitnet_loss(const torch::Tensor& fs, const torch::Tensor& ft, bool normalize);

/// Attention transfer on [B, C, H, W] maps: mean((a(fs) - a(ft))^2), a(f) = L2-normalised
/// mean_c |f|^p flattened; a map of another size is average-pooled to the smaller one first.
torch::Tensor at_loss(const torch::Tensor& fs, const torch::Tensor& ft, double p);

/// MSE / 2 between features standardised per channel over batch and positions (PKD).
torch::Tensor pkd_loss(const torch::Tensor& fs, const torch::Tensor& ft);

/// T^2 / C x sum over channels of KL(softmax(ft_c / T) || softmax(fs_c / T)) over the H x W
/// positions, mean over the batch (Shu et al. 2021).
torch::Tensor cwd_loss(const torch::Tensor& fs, const torch::Tensor& ft, double T);

/// distance * smooth-L1 of mean-normalised pairwise distances + angle * smooth-L1 of triplet
/// angle cosines, on flattened features (Park et al. 2019).
torch::Tensor rkd_loss(const torch::Tensor& fs, const torch::Tensor& ft, double distance,
                       double angle);

/// ||normalize_rows(G_s) - normalize_rows(G_t)||_F^2 / B^2, G = f f^T (Tung & Mori 2019).
torch::Tensor sp_loss(const torch::Tensor& fs, const torch::Tensor& ft);

/// mean over pairs of p_t log(p_t / p_s), p the row-normalised cosine kernel (cos + 1) / 2
/// (Passalis & Tefas 2018).
torch::Tensor pkt_loss(const torch::Tensor& fs, const torch::Tensor& ft);

/// CRD's objective (Tian et al. 2020, eqs. 18-19, as the authors' ContrastLoss computes it) on
/// L2-normalised embeddings es, et [B, D] and memory banks [N, D]: each student embedding is scored
/// against the teacher memory's row of its own image (index [B]) and the rows `negatives` [K],
/// h = exp(e . m / T) / z, and the NCE loss -(sum log h+/(h+ + K/N) + sum log (K/N)/(h- + K/N)) / B
/// taken; the same for the teacher embeddings against the student memory; the two added. z_s and
/// z_t are the normalisers (crd_normalizer on the first batch).
torch::Tensor crd_loss(const torch::Tensor& es, const torch::Tensor& et,
                       const torch::Tensor& memory_s, const torch::Tensor& memory_t,
                       const torch::Tensor& index, const torch::Tensor& negatives, double T,
                       double z_s, double z_t);
/// CRD's normaliser: mean of exp(e . m / T) over the batch's positive and negative scores times N,
/// the bank's size (the authors' estimate of the partition function, fixed after the first batch).
double crd_normalizer(const torch::Tensor& e, const torch::Tensor& memory,
                      const torch::Tensor& index, const torch::Tensor& negatives, double T);

/// One registry term on one batch, unweighted: logit losses read the logits (and labels), feature
/// losses the features of their layers (the student's already through its adapter).
torch::Tensor loss_term(const LossSpec& spec, const torch::Tensor& student_logits,
                        const torch::Tensor& teacher_logits, const torch::Tensor& labels,
                        const torch::Tensor& student_feature, const torch::Tensor& teacher_feature);

}  // namespace kd
