#include "kd/losses/zoo.h"

#include <limits>

#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {
namespace {

namespace F = torch::nn::functional;

void check_logits(const char* loss, const torch::Tensor& s, const torch::Tensor& t) {
  KD_CHECK(s.dim() == 2 && s.sizes() == t.sizes(),
           "{}: student logits {} and teacher logits {} differ in shape", loss, c10::str(s.sizes()),
           c10::str(t.sizes()));
}

void check_batch(const char* loss, const torch::Tensor& fs, const torch::Tensor& ft) {
  KD_CHECK(fs.dim() >= 2 && ft.dim() >= 2 && fs.size(0) == ft.size(0),
           "{}: student features {} and teacher features {} must share the batch dimension", loss,
           c10::str(fs.sizes()), c10::str(ft.sizes()));
}

// Pearson correlation of matching rows: cosine similarity of the centred rows (DIST's code).
torch::Tensor row_pearson(const torch::Tensor& a, const torch::Tensor& b) {
  auto ac = a - a.mean(1, true), bc = b - b.mean(1, true);
  return (ac * bc).sum(1) / (ac.norm(2, 1) * bc.norm(2, 1) + 1e-8);
}

// Pairwise Euclidean distances with a zero diagonal (RKD's _pdist, not squared).
torch::Tensor pairwise_distance(const torch::Tensor& e) {
  auto sq = e.pow(2).sum(1);
  auto d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e.mm(e.t())).clamp_min(1e-12).sqrt();
  return d * (1 - torch::eye(e.size(0), d.options()));
}

torch::Tensor triplet_angles(const torch::Tensor& e) {
  auto diff = F::normalize(e.unsqueeze(0) - e.unsqueeze(1), F::NormalizeFuncOptions().p(2).dim(2));
  return torch::bmm(diff, diff.transpose(1, 2)).flatten();
}

torch::Tensor cosine_kernel_density(const torch::Tensor& f) {
  auto n = f / (f.pow(2).sum(1, true).sqrt() + 1e-7);
  auto k = (n.mm(n.t()) + 1.0) / 2.0;
  return k / k.sum(1, true);
}

// exp(e . m / T) against the bank row of each sample's own image, then against the shared
// negatives: [B, 1 + K].
torch::Tensor crd_scores(const torch::Tensor& e, const torch::Tensor& memory,
                         const torch::Tensor& index, const torch::Tensor& negatives, double T) {
  auto pos = (memory.index_select(0, index) * e).sum(1, true);
  auto neg = e.mm(memory.index_select(0, negatives).t());
  return (torch::cat({pos, neg}, 1) / T).exp();
}

// The authors' ContrastLoss (NCE with noise distribution 1/N).
torch::Tensor nce_loss(const torch::Tensor& h, int64_t n_data) {
  const double m = static_cast<double>(h.size(1) - 1), pn = 1.0 / static_cast<double>(n_data),
               eps = 1e-7;
  auto pos = h.select(1, 0);
  auto neg = h.narrow(1, 1, h.size(1) - 1);
  auto log_d1 = (pos / (pos + (m * pn + eps))).log();
  auto log_d0 = ((m * pn) / (neg + (m * pn + eps))).log();
  return -(log_d1.sum() + log_d0.sum()) / static_cast<double>(h.size(0));
}

}  // namespace

torch::Tensor crd_loss(const torch::Tensor& es, const torch::Tensor& et,
                       const torch::Tensor& memory_s, const torch::Tensor& memory_t,
                       const torch::Tensor& index, const torch::Tensor& negatives, double T,
                       double z_s, double z_t) {
  KD_CHECK(es.dim() == 2 && et.sizes() == es.sizes() && memory_s.sizes() == memory_t.sizes() &&
               memory_s.size(1) == es.size(1) && index.numel() == es.size(0),
           "crd: embeddings {} and {}, memories {} and {}, {} indices do not fit",
           c10::str(es.sizes()), c10::str(et.sizes()), c10::str(memory_s.sizes()),
           c10::str(memory_t.sizes()), index.numel());
  const int64_t n = memory_s.size(0);
  return nce_loss(crd_scores(es, memory_t.detach(), index, negatives, T) / z_s, n) +
         nce_loss(crd_scores(et, memory_s.detach(), index, negatives, T) / z_t, n);
}

double crd_normalizer(const torch::Tensor& e, const torch::Tensor& memory,
                      const torch::Tensor& index, const torch::Tensor& negatives, double T) {
  torch::NoGradGuard no_grad;
  return crd_scores(e, memory, index, negatives, T).mean().item<double>() *
         static_cast<double>(memory.size(0));
}

torch::Tensor standardize_logits(const torch::Tensor& z) {
  return (z - z.mean(1, true)) / (z.std(1, /*unbiased=*/true, /*keepdim=*/true) + 1e-7);
}

torch::Tensor kd_kl(const torch::Tensor& s, const torch::Tensor& t, double T) {
  check_logits("kd", s, t);
  auto log_ps = torch::log_softmax(s / T, 1);
  auto log_pt = torch::log_softmax(t.detach() / T, 1);
  return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean() * (T * T);
}

torch::Tensor dkd_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& labels,
                       double alpha, double beta, double T) {
  check_logits("dkd", s, t);
  KD_CHECK(labels.dim() == 1 && labels.size(0) == s.size(0), "dkd: {} labels for {} samples",
           labels.numel(), s.size(0));
  // No range check here (it would read two values off the device every step): the configuration
  // refuses DKD where an image has no label, and scatter_ itself rejects an index out of range.
  auto gt =
      torch::zeros_like(s, s.options().dtype(torch::kBool)).scatter_(1, labels.unsqueeze(1), true);
  auto zs = s / T, zt = t.detach() / T;
  // Binary (target, rest) distributions in log space: log p_rest = logsumexp of the other classes.
  const double neg = -std::numeric_limits<double>::infinity();
  auto log_ps = torch::log_softmax(zs, 1), log_pt = torch::log_softmax(zt, 1);
  auto bin = [&](const torch::Tensor& lp) {
    return torch::stack(
        {lp.masked_fill(~gt, neg).logsumexp(1), lp.masked_fill(gt, neg).logsumexp(1)}, 1);
  };
  auto bs = bin(log_ps), bt = bin(log_pt);
  auto tckd = (bt.exp() * (bt - bs)).sum(1).mean();
  // Among the non-target classes: the target masked out of both softmaxes (DKD's -1000 * gt).
  auto mask = gt.to(zs.scalar_type()) * 1000.0;
  auto ns = torch::log_softmax(zs - mask, 1), nt = torch::log_softmax(zt - mask, 1);
  auto nckd = (nt.exp() * (nt - ns)).sum(1).mean();
  return (alpha * tckd + beta * nckd) * (T * T);
}

torch::Tensor dist_loss(const torch::Tensor& s, const torch::Tensor& t, double beta, double gamma,
                        double T) {
  check_logits("dist", s, t);
  auto ps = torch::softmax(s / T, 1), pt = torch::softmax(t.detach() / T, 1);
  auto inter = 1 - row_pearson(ps, pt).mean();
  auto intra = 1 - row_pearson(ps.t(), pt.t()).mean();
  return (beta * inter + gamma * intra) * (T * T);
}

torch::Tensor mlkd_loss(const torch::Tensor& s, const torch::Tensor& t, double instance,
                        double batch, double cls) {
  check_logits("mlkd", s, t);
  // The authors' training code (reduce=False, then a mean): the mean squared difference of the
  // B x B and C x C matrices, divided by B and C once more.
  const double B = static_cast<double>(s.size(0)), C = static_cast<double>(s.size(1));
  torch::Tensor total = torch::zeros({}, s.options());
  const double temperatures[] = {2, 3, 4, 5, 6};
  for (double T : temperatures) {
    auto ps = torch::softmax(s / T, 1), pt = torch::softmax(t.detach() / T, 1);
    auto term = instance * kd_kl(s, t, T);
    if (batch > 0) term = term + batch * (pt.mm(pt.t()) - ps.mm(ps.t())).pow(2).mean() / B;
    if (cls > 0) term = term + cls * (pt.t().mm(pt) - ps.t().mm(ps)).pow(2).mean() / C;
    total = total + term;
  }
  return total / 5.0;
}

torch::Tensor fitnet_loss(const torch::Tensor& fs, const torch::Tensor& ft, bool normalize) {
  KD_CHECK(fs.sizes() == ft.sizes(),
           "fitnet: student feature {} and teacher feature {} differ in shape",
           c10::str(fs.sizes()), c10::str(ft.sizes()));
  auto t = ft.detach();
  if (!normalize) return (fs - t).pow(2).mean();
  auto opts = F::NormalizeFuncOptions().dim(1).eps(1e-8);
  return (F::normalize(fs.flatten(1), opts) - F::normalize(t.flatten(1), opts))
      .pow(2)
      .sum(1)
      .mean();
}

torch::Tensor at_loss(const torch::Tensor& fs, const torch::Tensor& ft, double p) {
  KD_CHECK(fs.dim() == 4 && ft.dim() == 4 && fs.size(0) == ft.size(0),
           "at: needs [B, C, H, W] features, got student {} and teacher {}", c10::str(fs.sizes()),
           c10::str(ft.sizes()));
  auto map = [p](const torch::Tensor& f) { return f.abs().pow(p).mean(1, true); };
  auto ms = map(fs), mt = map(ft.detach());
  const int64_t h = std::min(ms.size(2), mt.size(2)), w = std::min(ms.size(3), mt.size(3));
  auto fit = [&](const torch::Tensor& m) {
    return (m.size(2) == h && m.size(3) == w)
               ? m
               : F::adaptive_avg_pool2d(m, F::AdaptiveAvgPool2dFuncOptions({h, w}));
  };
  auto opts = F::NormalizeFuncOptions().dim(1);
  return (F::normalize(fit(ms).flatten(1), opts) - F::normalize(fit(mt).flatten(1), opts))
      .pow(2)
      .mean();
}

torch::Tensor pkd_loss(const torch::Tensor& fs, const torch::Tensor& ft) {
  KD_CHECK(fs.sizes() == ft.sizes() && fs.dim() >= 2,
           "pkd: student feature {} and teacher feature {} differ in shape", c10::str(fs.sizes()),
           c10::str(ft.sizes()));
  auto norm = [](const torch::Tensor& f) {
    // Channels first, then everything else: batch and positions.
    auto c = f.transpose(0, 1).reshape({f.size(1), -1});
    return (c - c.mean(1, true)) / (c.std(1, true, true) + 1e-6);
  };
  return (norm(fs) - norm(ft.detach())).pow(2).mean() / 2.0;
}

torch::Tensor cwd_loss(const torch::Tensor& fs, const torch::Tensor& ft, double T) {
  KD_CHECK(fs.dim() == 4 && fs.sizes() == ft.sizes(),
           "cwd: needs equal [B, C, H, W] features, got student {} and teacher {}",
           c10::str(fs.sizes()), c10::str(ft.sizes()));
  const int64_t B = fs.size(0), C = fs.size(1);
  auto ls = torch::log_softmax(fs.flatten(2) / T, 2),
       lt = torch::log_softmax(ft.detach().flatten(2) / T, 2);
  return (lt.exp() * (lt - ls)).sum() * (T * T) / static_cast<double>(B * C);
}

torch::Tensor rkd_loss(const torch::Tensor& fs, const torch::Tensor& ft, double distance,
                       double angle) {
  check_batch("rkd", fs, ft);
  KD_CHECK(fs.size(0) >= 2, "rkd needs a batch of at least 2, got {}", fs.size(0));
  auto es = fs.flatten(1), et = ft.detach().flatten(1);
  torch::Tensor loss = torch::zeros({}, fs.options());
  if (distance > 0) {
    auto dt = pairwise_distance(et);
    dt = dt / dt.masked_select(dt > 0).mean();
    auto ds = pairwise_distance(es);
    ds = ds / ds.masked_select(ds > 0).mean();
    loss = loss + distance * F::smooth_l1_loss(ds, dt);
  }
  if (angle > 0) loss = loss + angle * F::smooth_l1_loss(triplet_angles(es), triplet_angles(et));
  return loss;
}

torch::Tensor sp_loss(const torch::Tensor& fs, const torch::Tensor& ft) {
  check_batch("sp", fs, ft);
  auto gram = [](const torch::Tensor& f) {
    auto e = f.flatten(1);
    return F::normalize(e.mm(e.t()), F::NormalizeFuncOptions().dim(1));
  };
  const double B = static_cast<double>(fs.size(0));
  return (gram(ft.detach()) - gram(fs)).pow(2).sum() / (B * B);
}

torch::Tensor pkt_loss(const torch::Tensor& fs, const torch::Tensor& ft) {
  check_batch("pkt", fs, ft);
  auto ps = cosine_kernel_density(fs.flatten(1)),
       pt = cosine_kernel_density(ft.detach().flatten(1));
  return (pt * ((pt + 1e-7) / (ps + 1e-7)).log()).mean();
}

torch::Tensor loss_term(const LossSpec& spec, const torch::Tensor& s, const torch::Tensor& t,
                        const torch::Tensor& labels, const torch::Tensor& fs,
                        const torch::Tensor& ft) {
  const std::string& n = spec.name;
  if (!find_loss(n).feature) {
    const bool standardize = spec.get("std") != 0;
    auto zs = standardize ? standardize_logits(s) : s;
    auto zt = standardize ? standardize_logits(t.detach()) : t.detach();
    if (n == "kd") return kd_kl(zs, zt, spec.get("T"));
    if (n == "dkd")
      return dkd_loss(zs, zt, labels, spec.get("alpha"), spec.get("beta"), spec.get("T"));
    if (n == "dist") return dist_loss(zs, zt, spec.get("beta"), spec.get("gamma"), spec.get("T"));
    if (n == "mlkd")
      return mlkd_loss(zs, zt, spec.get("instance"), spec.get("batch"), spec.get("class"));
  }
  if (n == "fitnet") return fitnet_loss(fs, ft, spec.get("normalize") != 0);
  if (n == "at") return at_loss(fs, ft, spec.get("p"));
  if (n == "pkd") return pkd_loss(fs, ft);
  if (n == "cwd") return cwd_loss(fs, ft, spec.get("T"));
  if (n == "rkd") return rkd_loss(fs, ft, spec.get("distance"), spec.get("angle"));
  if (n == "sp") return sp_loss(fs, ft);
  if (n == "pkt") return pkt_loss(fs, ft);
  KD_CHECK(n != "crd", "crd needs its memory bank: ContrastMemory (kd/losses/crd.h) computes it");
  fail("loss {} is in the registry but has no implementation", n);
}

}  // namespace kd
