#!/usr/bin/python3
"""Writes tests/golden/zoo.json: inputs, values and input gradients of every loss in kd's
registry (kd/losses/zoo.h), each written here from its paper (and the authors' code where the
paper leaves a detail open), independently of kd. Run with Debian's python3-torch:
/usr/bin/python3 tests/golden/make_zoo_golden.py"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(2024)


def standardize(z):  # Sun et al. 2024, eq. 8; the authors' code: unbiased std, eps 1e-7
    return (z - z.mean(-1, keepdim=True)) / (1e-7 + z.std(-1, keepdim=True))


def kd(s, t, T):  # Hinton et al. 2015
    return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T


def dkd(s, t, y, alpha, beta, T):  # Zhao et al. 2022, eq. 7 (mdistiller's dkd_loss)
    gt = F.one_hot(y, s.shape[1]).double()
    other = 1 - gt
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * other).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * other).sum(1)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T ** 2 / s.shape[0]
    nckd = F.kl_div(F.log_softmax(s / T - 1000.0 * gt, 1), F.softmax(t / T - 1000.0 * gt, 1),
                    reduction="sum") * T ** 2 / s.shape[0]
    return alpha * tckd + beta * nckd


def pearson(a, b, eps=1e-8):  # DIST's cosine similarity of centred rows
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist(s, t, beta, gamma, T):  # Huang et al. 2022, eq. 9
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    inter = 1 - pearson(ps, pt).mean()
    intra = 1 - pearson(ps.t(), pt.t()).mean()
    return T * T * (beta * inter + gamma * intra)


def mlkd(s, t, wi, wb, wc):
    """Jin et al. 2023: instance, batch and class levels over 5 temperatures, reduced as the
    authors' mlkd.py trains (bc_loss/cc_loss with reduce=False, divided by B or C, then .mean())."""
    total = 0
    for T in [2.0, 3.0, 4.0, 5.0, 6.0]:
        ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
        inst = (F.kl_div(F.log_softmax(s / T, 1), pt, reduction="none").sum(1).mean()) * T * T
        batch = (((pt @ pt.t() - ps @ ps.t()) ** 2) / s.shape[0]).mean()
        cls = (((pt.t() @ pt - ps.t() @ ps) ** 2) / s.shape[1]).mean()
        total = total + wi * inst + wb * batch + wc * cls
    return total / 5


def fitnet(fs, ft, normalize):
    if not normalize:
        return F.mse_loss(fs, ft)
    return (F.normalize(fs.flatten(1), dim=1, eps=1e-8) - F.normalize(ft.flatten(1), dim=1, eps=1e-8)).pow(2).sum(1).mean()


def at(fs, ft, p):  # Zagoruyko & Komodakis 2017, the authors' at() and at_loss()
    ms, mt = fs.abs().pow(p).mean(1, keepdim=True), ft.abs().pow(p).mean(1, keepdim=True)
    h, w = min(ms.shape[2], mt.shape[2]), min(ms.shape[3], mt.shape[3])
    if ms.shape[2:] != (h, w):
        ms = F.adaptive_avg_pool2d(ms, (h, w))
    if mt.shape[2:] != (h, w):
        mt = F.adaptive_avg_pool2d(mt, (h, w))
    return (F.normalize(ms.flatten(1)) - F.normalize(mt.flatten(1))).pow(2).mean()


def pkd(fs, ft):  # Cao et al. 2022 (MMRazor's PKDLoss.norm)
    def norm(f):
        C = f.shape[1]
        f = f.transpose(0, 1).reshape(C, -1)
        return (f - f.mean(-1, keepdim=True)) / (f.std(-1, keepdim=True) + 1e-6)
    return F.mse_loss(norm(fs), norm(ft)) / 2


def cwd(fs, ft, T):  # Shu et al. 2021, eq. 4 (MMRazor's ChannelWiseDivergence)
    N, C, H, W = fs.shape
    pt = F.softmax(ft.reshape(-1, H * W) / T, dim=1)
    loss = torch.sum(pt * F.log_softmax(ft.reshape(-1, H * W) / T, dim=1) - pt * F.log_softmax(fs.reshape(-1, H * W) / T, dim=1))
    return loss * T ** 2 / (C * N)


def pdist(e, eps=1e-12):
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def rkd(fs, ft, wd, wa):  # Park et al. 2019, eqs. 4-7
    s, t = fs.flatten(1), ft.flatten(1)
    td = pdist(t)
    td = td / td[td > 0].mean()
    sd = pdist(s)
    sd = sd / sd[sd > 0].mean()
    ld = F.smooth_l1_loss(sd, td)
    nt = F.normalize(t.unsqueeze(0) - t.unsqueeze(1), p=2, dim=2)
    ns = F.normalize(s.unsqueeze(0) - s.unsqueeze(1), p=2, dim=2)
    la = F.smooth_l1_loss(torch.bmm(ns, ns.transpose(1, 2)).view(-1), torch.bmm(nt, nt.transpose(1, 2)).view(-1))
    return wd * ld + wa * la


def sp(fs, ft):  # Tung & Mori 2019, eq. 4
    b = fs.shape[0]
    gs = F.normalize(fs.view(b, -1) @ fs.view(b, -1).t())
    gt = F.normalize(ft.view(b, -1) @ ft.view(b, -1).t())
    return ((gt - gs) ** 2).sum() / (b * b)


def pkt(fs, ft, eps=1e-7):  # Passalis & Tefas 2018 (cosine kernel)
    def density(f):
        f = f.flatten(1)
        f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)
        k = (f @ f.t() + 1) / 2
        return k / k.sum(1, keepdim=True)
    ps, pt = density(fs), density(ft)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


def crd(es, et, mem_s, mem_t, index, negatives, T, z_s, z_t):
    """Tian et al. 2020, eqs. 18-19, as the authors' ContrastMemory + ContrastLoss compute it, with
    one set of negatives shared by the batch: each embedding scored against the other network's
    bank, h = exp(e . m / T) / Z, NCE with noise 1/N."""
    n = mem_s.shape[0]

    def scores(e, mem):
        pos = (mem[index] * e).sum(1, keepdim=True)
        return torch.exp(torch.cat([pos, e @ mem[negatives].t()], 1) / T)

    def contrast(x):
        m, pn, eps = x.shape[1] - 1, 1.0 / n, 1e-7
        log_d1 = torch.log(x[:, 0] / (x[:, 0] + m * pn + eps))
        log_d0 = torch.log((m * pn) / (x[:, 1:] + m * pn + eps))
        return -(log_d1.sum() + log_d0.sum()) / x.shape[0]

    return contrast(scores(es, mem_t) / z_s) + contrast(scores(et, mem_s) / z_t)


def tensor_case(x):
    return {"shape": list(x.shape), "values": x.detach().flatten().tolist()}


cases = []


def add(name, options, loss, s, t, labels=None, std=False):
    s = s.clone().requires_grad_(True)
    zs, zt = (standardize(s), standardize(t)) if std else (s, t)
    value = loss(zs, zt)
    grad, = torch.autograd.grad(value, s)
    case = {"name": name, "options": dict(options, std=1 if std else 0) if std is not None else options,
            "student": tensor_case(s), "teacher": tensor_case(t), "value": value.item(), "grad": tensor_case(grad)}
    if labels is not None:
        case["labels"] = labels.tolist()
    cases.append(case)


for (B, C) in [(6, 10), (9, 4)]:
    s = torch.randn(B, C, dtype=torch.float64) * 3
    t = torch.randn(B, C, dtype=torch.float64) * 4
    y = torch.randint(0, C, (B,))
    for std in [False, True]:
        add("kd", {"T": 4.0}, lambda a, b: kd(a, b, 4.0), s, t, std=std)
        add("kd", {"T": 1.5}, lambda a, b: kd(a, b, 1.5), s, t, std=std)
        add("dkd", {"alpha": 1.0, "beta": 8.0, "T": 4.0}, lambda a, b: dkd(a, b, y, 1.0, 8.0, 4.0), s, t, y, std)
        add("dkd", {"alpha": 0.5, "beta": 2.0, "T": 1.0}, lambda a, b: dkd(a, b, y, 0.5, 2.0, 1.0), s, t, y, std)
        add("dist", {"beta": 1.0, "gamma": 1.0, "T": 1.0}, lambda a, b: dist(a, b, 1.0, 1.0, 1.0), s, t, std=std)
        add("dist", {"beta": 2.0, "gamma": 0.5, "T": 4.0}, lambda a, b: dist(a, b, 2.0, 0.5, 4.0), s, t, std=std)
        add("mlkd", {"instance": 1.0, "batch": 1.0, "class": 1.0}, lambda a, b: mlkd(a, b, 1.0, 1.0, 1.0), s, t, std=std)
        add("mlkd", {"instance": 0.5, "batch": 0.0, "class": 2.0}, lambda a, b: mlkd(a, b, 0.5, 0.0, 2.0), s, t, std=std)

for shape_s, shape_t in [((5, 3, 4, 4), (5, 3, 4, 4)), ((4, 6, 2, 3), (4, 6, 2, 3))]:
    fs = torch.randn(*shape_s, dtype=torch.float64)
    ft = torch.randn(*shape_t, dtype=torch.float64) * 2 + 0.5
    add("fitnet", {"normalize": 1.0}, lambda a, b: fitnet(a, b, True), fs, ft, std=None)
    add("fitnet", {"normalize": 0.0}, lambda a, b: fitnet(a, b, False), fs, ft, std=None)
    add("pkd", {}, pkd, fs, ft, std=None)
    add("cwd", {"T": 4.0}, lambda a, b: cwd(a, b, 4.0), fs, ft, std=None)
    add("cwd", {"T": 1.0}, lambda a, b: cwd(a, b, 1.0), fs, ft, std=None)
for shape_s, shape_t in [((5, 3, 4, 4), (5, 7, 4, 4)), ((4, 2, 6, 6), (4, 5, 3, 3))]:
    fs = torch.randn(*shape_s, dtype=torch.float64)
    ft = torch.randn(*shape_t, dtype=torch.float64) * 2
    add("at", {"p": 2.0}, lambda a, b: at(a, b, 2.0), fs, ft, std=None)
    add("at", {"p": 1.0}, lambda a, b: at(a, b, 1.0), fs, ft, std=None)
for shape_s, shape_t in [((6, 3, 2, 2), (6, 5, 2, 2)), ((5, 7), (5, 11))]:
    fs = torch.randn(*shape_s, dtype=torch.float64)
    ft = torch.randn(*shape_t, dtype=torch.float64) * 3
    add("rkd", {"distance": 25.0, "angle": 50.0}, lambda a, b: rkd(a, b, 25.0, 50.0), fs, ft, std=None)
    add("rkd", {"distance": 1.0, "angle": 0.0}, lambda a, b: rkd(a, b, 1.0, 0.0), fs, ft, std=None)
    add("sp", {}, sp, fs, ft, std=None)
    add("pkt", {}, pkt, fs, ft, std=None)

crd_cases = []
for (B, D, N, K, T) in [(6, 8, 20, 7, 0.07), (4, 5, 11, 16, 0.5)]:
    es = F.normalize(torch.randn(B, D, dtype=torch.float64), dim=1).requires_grad_(True)
    et = F.normalize(torch.randn(B, D, dtype=torch.float64), dim=1).requires_grad_(True)
    mem_s = F.normalize(torch.randn(N, D, dtype=torch.float64), dim=1)
    mem_t = F.normalize(torch.randn(N, D, dtype=torch.float64), dim=1)
    index = torch.randperm(N)[:B]
    negatives = torch.randint(0, N, (K,))
    with torch.no_grad():  # the normalisers as the authors set them on the first batch
        z_s = (torch.exp(torch.cat([(mem_t[index] * es).sum(1, keepdim=True), es @ mem_t[negatives].t()], 1) / T).mean() * N).item()
        z_t = (torch.exp(torch.cat([(mem_s[index] * et).sum(1, keepdim=True), et @ mem_s[negatives].t()], 1) / T).mean() * N).item()
    value = crd(es, et, mem_s, mem_t, index, negatives, T, z_s, z_t)
    g_s, g_t = torch.autograd.grad(value, [es, et])
    crd_cases.append({"T": T, "student": tensor_case(es), "teacher": tensor_case(et), "memory_s": tensor_case(mem_s),
                      "memory_t": tensor_case(mem_t), "index": index.tolist(), "negatives": negatives.tolist(),
                      "z_s": z_s, "z_t": z_t, "value": value.item(), "grad_student": tensor_case(g_s),
                      "grad_teacher": tensor_case(g_t)})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo.json")
with open(out, "w") as f:
    json.dump({"generator": "tests/golden/make_zoo_golden.py", "torch": torch.__version__, "cases": cases, "crd": crd_cases}, f)
print(f"{len(cases)} cases -> {out}")
