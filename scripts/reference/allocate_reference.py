"""Reference for the `allocate` stage (Sources/.../allocate): the pruning plan computed in numpy float64
from a scores file, written independently of the Swift code from docs/DESIGN.md ("The plan
(`allocate`)") and the official code it cites: CASIA-IVA-Lab/FLAP lib/prune.py (`prune_flap`: the UL-UM
and UL-MM thresholds inside the per-layer loop; after it `standarlization`, AL-MM, AL-AM and
`cal_remove_neuron`) and wyxscir/CFSP lib/prune.py (`prune_cfsp` after the loop: the sigmoid of the
block importances, the 1.05 rescaling, `every_pruning_ratios`, the thresholds with and without
`cuda_friendly`).

  python3 scripts/reference/allocate_reference.py

reads Tests/Fixtures/allocate/{smollm2_flap,smollm2_cfsp,tiny_nonuniform_wanda}_scores.safetensors and
writes Tests/Fixtures/allocate/plans.json (deterministic: sorted keys, 2-space indentation, integer
lists on one line):

  {case: {"scores": file name,
          "args": {"structure": "UL-UM" | "UL-MM" | "AL-MM" | "AL-AM"   (or "blocks": "angular",
                                                                  with "angular_a"),
                   "ratio", "attention_unit" ("group" | "head"), "prune" ("attention,mlp" | "mlp" | ...),
                   "layers" (null = all, else "A-B"), "round" (null or K), "min_keep", "remove_heads"},
          "achieved": removed decoder-layer linear parameters / all of them (float),
          "layers": [{"kept_heads": [...], "kept_kv_heads": [...], "kept_channels": [...]} per layer]}}

  All index lists are sorted ascending. For a case whose kept MLP channels outnumber the removed ones
  in total (see SIZE below), the per-layer key is "removed_channels" instead of "kept_channels"
  (kept = range(F_l) minus removed); heads and KV heads are always stored as kept lists.

Model description (from the scores file's metadata): `config` gives C (hidden_size), D (head_dim),
and per layer H_l (head_counts), Hkv_l (kv_head_counts), F_l (ffn_widths); g_l = H_l / Hkv_l; query head
h uses KV head h // g (Hugging Face GQA layout). `biases` lists per layer the projections with a bias.

Parameter counts (weights and biases of q, k, v, o, gate, up, down; a layer with no heads or no MLP
still counts the biases it holds, e.g. o_proj's or down_proj's C entries):
  attention(nh, nkv) = nh·D·(C + qb) + nkv·D·(C + kb) + nkv·D·(C + vb) + C·nh·D + ob·C
  mlp(nf)            = nf·(C + gb) + nf·(C + ub) + C·nf + db·C
  T_l = attention(H_l, Hkv_l) + mlp(F_l);  T = sum over all decoder layers.
  (xb = 1 when projection x has a bias.)  achieved = (T - sum_l params after pruning) / T.

Units and costs (DESIGN):
  MLP channel j: c_l = 3C + gb + ub.
  group k (--attention-unit group): heads k·g .. k·g+g-1 and KV head k: g·D·(2C + qb) + D·(2C + kb + vb).
  head slice r (--attention-unit head, g > 1): within each group the heads are ordered by
    (score, index) ascending; slice r holds every group's r-th head: Hkv·D·(2C + qb), and the last
    slice (r = g-1) also removes all K and V rows: + Hkv·D·(2C + kb + vb).
  value dimension (k, e) (--attention-unit vo, FASP): v_proj row k·D + e and the o_proj column h·D + e
    of each head h of group k: C + vb + g·C. Its raw score is the sum of those g channel scores, its
    standardised score their mean. A group whose D value rows all go takes its query heads and K rows
    along (they would feed nothing); the plan then lists the kept v rows as "kept_value_dims".
    Parameters of a layer with value rows vr kept: attention(nh, nkv, vr) = nh·D·(C + qb) +
    nkv·D·(C + kb) + vr·(C + vb) + C·(nh/nkv)·vr + ob·C; for UL-UM the attention kind's T_kinds,l part is
    the layer's attention parameters but q and k (which the units cannot remove): the sum of the unit
    costs plus ob·C.
Unit scores: raw (UL-UM, UL-MM, blocks): head = sum of its D channel scores, group / slice = sum of its
  heads' scores (in head order); standardised (AL-MM, AL-AM): per layer z = (x - mean(x)) / std(x, ddof=1)
  over the layer's H·D attention channels and separately over its F MLP channels; head, group or slice
  score = mean of z over its channels; channel score = z_j.

Budget and scope: P = --ratio of T. Pruned layers = --layers A-B (inclusive, 0-based; default all);
pruned kinds = --prune. A kind is pruned in a layer only if the layer has units of it (H_l > 0 for
attention, F_l > 0 for MLP).

Structures:
  UL-UM: P' = P·T / T_sel (T_sel = sum of T_l over pruned layers that have a pruned kind; P' = P
    exactly when T_sel = T); per pruned layer q = min(1, P'·T_l / T_kinds,l) (T_kinds,l = attention(H,Hkv)
    and/or mlp(F) of its pruned kinds; q = P exactly when P' = P and T_kinds,l = T_l, so the float
    product is FLAP's `int(ratio·n)`); per kind with U units: i = int(q·U); i >= U removes all, else
    threshold = ascending sorted[i], keep score >= threshold.
  UL-MM: attention: i = remove_heads // (number of pruned layers) (FLAP: // len(layers)); threshold =
    ascending sorted[i] (i >= U removes all), keep >=; then min-keep for attention; n_l =
    floor((P'·T_l - cost of the attention units actually removed) / c_l), clamped at 0; threshold =
    ascending sorted[n_l] (n_l >= F removes all), keep >=.
  AL-MM: attention units of all pruned layers by standardised score: remove_heads = 0 removes none;
    r > number of units removes all; else threshold = descending sorted[-r], keep >; min-keep for
    attention; n = floor((P·T - removed attention cost) / c), c = mean channel cost over the pruned
    channels (= 3C for FLAP's models), n <= 0 removes none, n > N all, else threshold = descending
    sorted[-n], keep >.
  AL-AM: all pruned units (attention units layer by layer, then MLP channels layer by layer, FLAP's
    torch.cat order) stable-sorted by standardised score descending; with integer costs c_i in that
    order k* = the first k minimising |sum_{i<=k} c_i - (sum c - P·T)| (0-based, cumulative sum
    inclusive), the DESIGN's |sum w - (W - P·T/c_channel)| multiplied by c_channel (same minimiser,
    and exact integer cumulative sums); threshold = sorted[k*]; keep score > threshold.
  blocks angular (MLP only): over the pruned layers, s_l = angular_sum; mid = sum(s)/L (Python sum, in
    layer order); s_l = 1/(1 + exp(-a·(s_l - mid)/1e4)); avg, max; q = P·T / T_mlp (T_mlp = sum of
    mlp(F_l) over the pruned layers); if max/avg·(1-q) >= 1 (and max > avg): scale = (avg·(1/(1-q) -
    1))/(max - avg)/1.05, s_l = avg + (s_l - avg)·scale (CFSP's two branches), avg recomputed;
    r_l = s_l/avg·(1-q); without --round: i = int(F·r_l), i >= F keeps all, else threshold = descending
    sorted[i]; with --round K: i = int((F·r_l + K/2)/K)·K - 1, at least K-1 (see ambiguity 9), i >= F
    keeps all; keep score >= threshold.
  --round K (other structures, MLP of pruned layers): kept count k -> floor((k + K/2)/K)·K (half up, as
    CFSP's +64), at least K, at most F; the best (score, index) channels are kept. Applied before
    min-keep.
  --min-keep M: in each pruned layer and pruned kind, the kept set is extended by the M best units
    (ordered by (score, index), the structure's scores) when it holds fewer than M.
"Best" and ties: units are totally ordered by (score, unit index) ascending = worst first (the DESIGN's
"lower index first among equal scores" for heads within a group, applied to every best/worst choice).
Threshold rules compare values only, so equal scores fall on the same side, as in the official code.

AMBIGUITIES and the readings chosen (closest to the official code where the DESIGN is silent):
  1. AL-AM weights. FLAP builds `compression_weight = torch.ones_like(indices)` (int64) and assigns
     512.0/3, which truncates to 170; the DESIGN says w = cost/c_channel (512/3). The DESIGN's
     generalised costs are followed (exact rational weights); the run prints, for AL-AM cases over all
     layers and both kinds, k* and the k* of FLAP's literal rule (int64 weights int(cost/3C), target
     sum(w)·(1-P)). They differ on smol_alam_20_group (34560 vs 34569) and smol_alam_95 (2901 vs 2899),
     agree on smol_alam_50_head, smol_alam_0, tiny_alam_30_head and tiny_alam_99.
  2. AL-AM at --ratio 0: threshold = sorted[k*] with k* the last unit and keep > removes the unit(s) of
     lowest standardised score, as FLAP does; the DESIGN states "0 removes none" only for AL-MM, so
     AL-AM keeps the literal behaviour (smol_alam_0 removes one unit).
  3. --attention-unit head with g = 1: literally a single slice would hold every head of the layer;
     the DESIGN also says "with H = Hkv both units are FLAP's per-head pruning", so with g = 1 head units
     are the per-head (group) units. No fixture has g = 1.
  4. --layers with UL-UM / UL-MM: the per-layer formulas q = P·T_l/T_kinds,l and P·T_l - cost do not
     make the other layers remove more, as the Budget paragraph requires; P is scaled to P' = P·T/T_sel.
     (No fixture case; identical to the literal formula when all layers are pruned.)
  5. A kind with no units in a layer (tiny layer 1: no heads; layer 2: no MLP) is not a pruned kind
     there: its parameters (a lone o_proj or down_proj bias) stay in T_l but not in T_kinds,l. The tiny
     UL-UM case gives the same plan under the literal reading (checked at run time).
  6. "removed attention cost" in UL-MM / AL-MM: the cost of the attention units actually removed (after
     min-keep), not FLAP's nominal count x head cost; they agree when no scores tie.
  7. c_channel in AL-MM when channel costs differ between layers (gate/up biases): the mean channel cost
     over the pruned channels; AL-AM does not depend on c_channel; UL-MM uses the layer's c_l.
  8. UL-MM "pruned layers" for remove_heads // L: the number of layers in --layers (FLAP: len(layers)),
     whether or not a layer has heads.
  9. blocks with --round K when int((F·r + K/2)/K) = 0: CFSP's index -1 would wrap to the last element
     and keep every channel; here at least K channels are kept, as the other structures' --round says.
     Not reached by the fixtures.
 10. --round K with F not a multiple of K: the rounded count is capped at F.
 11. AL-AM ties in the descending sort are broken by the concatenation order (stable sort), which
     only changes the cumulative sums, never the threshold's value, unless k* falls inside a tie.

SIZE: plans.json must stay under 1.5 MB; full kept lists for the 22 cases would be several MB, so each case
stores for the MLP whichever of kept / removed channel lists is shorter in total over its layers (the key
says which); the script prints the choice per case.
"""
import json
import math
import os
import sys

import numpy as np
from safetensors import safe_open

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "Tests", "Fixtures", "allocate")
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Layer:
    def __init__(self, idx, cfg, biases, attn, mlp, angular):
        self.idx = idx
        self.C, self.D = int(cfg["hidden_size"]), int(cfg["head_dim"])
        self.H, self.Hkv, self.F = (int(cfg["head_counts"][idx]), int(cfg["kv_head_counts"][idx]),
                                    int(cfg["ffn_widths"][idx]))
        self.g = self.H // self.Hkv if self.Hkv else 0
        assert self.H == self.g * self.Hkv
        b = set(biases)
        assert b <= set(PROJ), biases
        self.qb, self.kb, self.vb, self.ob, self.gb, self.ub, self.db = (int(p in b) for p in PROJ)
        self.attn = attn  # [H·D] or None (metric without attention scores)
        self.mlp = mlp    # [F]
        self.angular = angular
        if attn is not None:
            assert attn.shape == (self.H * self.D,), (idx, attn.shape)
        assert mlp.shape == (self.F,), (idx, mlp.shape)
        self.channel_cost = 3 * self.C + self.gb + self.ub

    def attention_params(self, nh, nkv, vrows=None):
        C, D = self.C, self.D
        vr = nkv * D if vrows is None else vrows
        per_group = nh // nkv if nkv else 0
        return (nh * D * (C + self.qb) + nkv * D * (C + self.kb) + vr * (C + self.vb)
                + C * per_group * vr + self.ob * C)

    def mlp_params(self, nf):
        C = self.C
        return nf * (C + self.gb) + nf * (C + self.ub) + C * nf + self.db * C

    def total(self):
        return self.attention_params(self.H, self.Hkv) + self.mlp_params(self.F)


def load_scores(name):
    path = os.path.join(FIX, name)
    with safe_open(path, "np") as f:
        meta = f.metadata()
        cfg = json.loads(meta["config"])
        biases = json.loads(meta["biases"])
        keys = set(f.keys())
        layers = []
        for l in range(int(cfg["num_hidden_layers"])):
            ak = f"model.layers.{l}.self_attn.o_proj.channel_score"
            attn = f.get_tensor(ak).astype(np.float64) if ak in keys else None
            mlp = f.get_tensor(f"model.layers.{l}.mlp.down_proj.channel_score").astype(np.float64)
            ang = float(f.get_tensor(f"model.layers.{l}.block.angular_sum")[0])
            layers.append(Layer(l, cfg, biases[l], attn, mlp, ang))
    return layers


def standardise(x):
    return (x - x.mean()) / x.std(ddof=1)


class AttnUnits:
    """The attention units of one layer: heads (query head lists), kv (KV head lists), cost (int64),
    score (float64), index = position in the list (the tie-break)."""

    def __init__(self, layer, unit, standardised):
        L = layer
        D, C = L.D, L.C
        x = L.attn
        z = standardise(x) if standardised else None
        if standardised:
            head_score = np.array([z[h * D:(h + 1) * D].mean() for h in range(L.H)])
        else:
            head_score = np.array([x[h * D:(h + 1) * D].sum() for h in range(L.H)])

        def unit_score(heads):
            if standardised:
                chans = np.concatenate([np.arange(h * D, (h + 1) * D) for h in heads])
                return z[chans].mean()
            s = 0.0
            for h in heads:
                s += head_score[h]
            return s

        self.heads, self.kv, self.rows, cost, score = [], [], [], [], []
        kv_cost = D * (2 * C + L.kb + L.vb)
        self.layer = L
        if unit == "vo":
            self.kind = "vo"
            for k in range(L.Hkv):
                for e in range(D):
                    chans = [h * D + e for h in range(k * L.g, (k + 1) * L.g)]
                    self.rows.append(k * D + e)
                    cost.append(C + L.vb + L.g * C)
                    score.append(z[chans].mean() if standardised else sum(x[c] for c in chans))
        elif unit == "group" or L.g == 1:  # ambiguity 3
            self.kind = "group"
            for k in range(L.Hkv):
                heads = list(range(k * L.g, (k + 1) * L.g))
                self.heads.append(heads)
                self.kv.append([k])
                cost.append(L.g * D * (2 * C + L.qb) + kv_cost)
                score.append(unit_score(heads))
        else:
            self.kind = "slice"
            order = []
            for k in range(L.Hkv):
                hs = list(range(k * L.g, (k + 1) * L.g))
                hs.sort(key=lambda h: (head_score[h], h))
                order.append(hs)
            for r in range(L.g):
                heads = [order[k][r] for k in range(L.Hkv)]
                last = r == L.g - 1
                self.heads.append(heads)
                self.kv.append(list(range(L.Hkv)) if last else [])
                cost.append(L.Hkv * D * (2 * C + L.qb) + (L.Hkv * kv_cost if last else 0))
                score.append(unit_score(heads))
        self.cost = np.array(cost, dtype=np.int64)
        self.score = np.array(score, dtype=np.float64)

    def kept_heads(self, keep):
        """(kept heads, kept KV heads, kept v rows or None)."""
        if self.kind == "vo":
            L = self.layer
            rows = sorted(self.rows[u] for u in range(len(keep)) if keep[u])
            kv = sorted(set(r // L.D for r in rows))
            heads = [h for k in kv for h in range(k * L.g, (k + 1) * L.g)]
            return heads, kv, rows
        if self.kind == "slice":
            # removed slices must be a prefix (slice scores rise with r), else K/V bookkeeping breaks
            removed = [r for r in range(len(keep)) if not keep[r]]
            assert removed == list(range(len(removed))), ("slices removed out of order", removed)
        heads = sorted(h for u in range(len(keep)) if keep[u] for h in self.heads[u])
        kv = sorted(set(k for u in range(len(keep)) if keep[u] for k in self.kv[u]))
        return heads, kv, None


def rank_best(score):
    """Indices from best to worst: (score, index) descending."""
    n = len(score)
    return sorted(range(n), key=lambda i: (score[i], i), reverse=True)


def min_keep(keep, score, m):
    if len(keep) == 0 or m <= 0:
        return keep
    if keep.sum() < m:
        keep = keep.copy()
        keep[rank_best(score)[:m]] = True
    return keep


def round_keep(keep, score, K):
    F = len(keep)
    k = int(keep.sum())
    target = int(math.floor((k + K / 2) / K)) * K
    target = min(max(target, K), F)
    out = np.zeros(F, dtype=bool)
    out[rank_best(score)[:target]] = True
    return out


def keep_ge_ascending_index(score, i):
    """UL rules: threshold = ascending sorted[i]; i >= U removes all; keep >= threshold."""
    if i >= len(score):
        return np.zeros(len(score), dtype=bool)
    thresh = np.sort(score)[i]
    return score >= thresh


def parse_layers(spec, n):
    if spec is None:
        return list(range(n))
    a, b = (int(t) for t in spec.split("-"))
    assert 0 <= a <= b < n, spec
    return list(range(a, b + 1))


def allocate(layers, ratio, structure=None, blocks=None, attention_unit="group", prune="attention,mlp",
             layer_range=None, round_k=None, min_keep_m=1, remove_heads=0, angular_a=1.0, literal_kinds=False, diag=None):
    P = float(ratio)
    kinds = set(prune.split(","))
    assert kinds <= {"attention", "mlp"} and kinds, prune
    n = len(layers)
    sel = parse_layers(layer_range, n)
    T = sum(L.total() for L in layers)
    do_attn = {l: "attention" in kinds and layers[l].H > 0 for l in sel}
    do_mlp = {l: "mlp" in kinds and layers[l].F > 0 for l in sel}
    if literal_kinds:  # ambiguity 5, literal reading, for the run-time check only
        lit_attn = {l: "attention" in kinds for l in sel}
        lit_mlp = {l: "mlp" in kinds for l in sel}
    else:
        lit_attn, lit_mlp = do_attn, do_mlp
    standardised = structure in ("AL-MM", "AL-AM")
    if blocks is not None:
        assert blocks == "angular" and kinds == {"mlp"}, "--blocks angular prunes the MLP only"
    units = {}
    for l in sel:
        if do_attn[l]:
            assert layers[l].attn is not None, "scores without attention tensors"
            units[l] = AttnUnits(layers[l], attention_unit, standardised)
    mscore = {l: (standardise(layers[l].mlp) if standardised else layers[l].mlp) for l in sel if do_mlp[l]}
    akeep = {l: np.ones(len(units[l].score), dtype=bool) for l in units}
    mkeep = {l: np.ones(layers[l].F, dtype=bool) for l in mscore}

    def kinds_params(l):
        L = layers[l]
        if attention_unit == "vo" and lit_attn[l] and l in units:
            return int(units[l].cost.sum()) + L.ob * L.C + (L.mlp_params(L.F) if lit_mlp[l] else 0)
        return ((L.attention_params(L.H, L.Hkv) if lit_attn[l] else 0)
                + (L.mlp_params(L.F) if lit_mlp[l] else 0))

    active = [l for l in sel if do_attn[l] or do_mlp[l]]
    T_sel = sum(layers[l].total() for l in active)
    P_layers = P if T_sel == T else P * T / T_sel  # ambiguity 4

    if P == 0 and remove_heads == 0:
        pass  # DESIGN: P = 0 (and no --remove-heads) keeps everything
    elif blocks is not None:
        ls = [l for l in sel if do_mlp[l]]
        s = [layers[l].angular for l in ls]
        mid = sum(s) / len(s)
        s = [(v - mid) / 1e4 for v in s]
        s = [float(1.0 / (1.0 + np.exp(-v * angular_a))) for v in s]
        avg = sum(s) / len(s)
        mx = max(s)
        T_mlp = sum(layers[l].mlp_params(layers[l].F) for l in ls)
        q = P * T / T_mlp
        if mx / avg * (1 - q) >= 1 and mx > avg:
            scale = (avg * (1 / (1 - q) - 1)) / (mx - avg) / 1.05
            s = [avg + (v - avg) * scale if v > avg else avg - (avg - v) * scale for v in s]
            avg = sum(s) / len(s)
        ratios = [v / avg * (1 - q) for v in s]
        for l, r in zip(ls, ratios):
            F = layers[l].F
            desc = np.sort(mscore[l])[::-1]
            if round_k is None:
                i = int(F * r)
            else:
                i = int(((F * r) + round_k / 2) / round_k) * round_k - 1
                i = max(i, round_k - 1)  # ambiguity 9
            if i >= F:
                continue
            mkeep[l] = mscore[l] >= desc[i]
    elif structure == "UL-UM":
        for l in active:
            L = layers[l]
            Tk = kinds_params(l)
            q = P if (P_layers == P and Tk == L.total()) else min(1.0, P_layers * L.total() / Tk)
            if do_attn[l]:
                u = units[l]
                akeep[l] = keep_ge_ascending_index(u.score, int(q * len(u.score)))
            if do_mlp[l]:
                mkeep[l] = keep_ge_ascending_index(mscore[l], int(q * L.F))
    elif structure == "UL-MM":
        per_layer = remove_heads // len(sel)
        for l in active:
            L = layers[l]
            removed_cost = 0
            if do_attn[l]:
                u = units[l]
                akeep[l] = min_keep(keep_ge_ascending_index(u.score, per_layer), u.score, min_keep_m)
                removed_cost = int(u.cost[~akeep[l]].sum())
            if do_mlp[l]:
                nl = max(0, int(math.floor((P_layers * L.total() - removed_cost) / L.channel_cost)))
                mkeep[l] = keep_ge_ascending_index(mscore[l], nl)
    elif structure == "AL-MM":
        removed_cost = 0
        if units:
            ls = sorted(units)
            allsc = np.concatenate([units[l].score for l in ls])
            r = int(remove_heads)
            if r > 0:
                if r > len(allsc):
                    thresh = np.inf
                    keepf = lambda sc: np.zeros(len(sc), dtype=bool)
                else:
                    thresh = np.sort(allsc)[::-1][-r]
                    keepf = lambda sc: sc > thresh
                for l in ls:
                    akeep[l] = min_keep(keepf(units[l].score), units[l].score, min_keep_m)
            removed_cost = sum(int(units[l].cost[~akeep[l]].sum()) for l in ls)
        if mscore:
            ls = sorted(mscore)
            allsc = np.concatenate([mscore[l] for l in ls])
            c = sum(layers[l].channel_cost * layers[l].F for l in ls) / sum(layers[l].F for l in ls)
            nrm = int(math.floor((P * T - removed_cost) / c))
            if nrm > 0:
                if nrm > len(allsc):
                    for l in ls:
                        mkeep[l] = np.zeros(layers[l].F, dtype=bool)
                else:
                    thresh = np.sort(allsc)[::-1][-nrm]
                    for l in ls:
                        mkeep[l] = mscore[l] > thresh
    elif structure == "AL-AM":
        sc, cost = [], []
        for l in sorted(units):
            sc.append(units[l].score)
            cost.append(units[l].cost)
        for l in sorted(mscore):
            sc.append(mscore[l])
            cost.append(np.full(layers[l].F, layers[l].channel_cost, dtype=np.int64))
        sc, cost = np.concatenate(sc), np.concatenate(cost)
        order = np.argsort(-sc, kind="stable")
        cum = np.cumsum(cost[order])
        target = float(cum[-1]) - P * T
        kstar = int(np.argmin(np.abs(cum.astype(np.float64) - target)))
        thresh = sc[order[kstar]]
        if diag is not None and T_sel == T and kinds == {"attention", "mlp"}:  # ambiguity 1: FLAP's int64 weights (int(cost / 3C)), target sum(w)·(1-P)
            c0 = 3 * layers[sel[0]].C
            w = cost[order] // c0
            cw = np.cumsum(w)
            k_flap = int(np.argmin(np.abs(cw - float(cw[-1]) * (1 - P))))
            diag["kstar"], diag["kstar_flap_int_weights"] = kstar, k_flap
            diag["same_threshold"] = bool(sc[order[k_flap]] == thresh)
        for l in units:
            akeep[l] = units[l].score > thresh
        for l in mscore:
            mkeep[l] = mscore[l] > thresh
    else:
        raise ValueError(f"unknown structure {structure}")

    # --round (not for blocks: there it is inside the threshold), then --min-keep
    for l in mscore:
        if round_k is not None and blocks is None:
            mkeep[l] = round_keep(mkeep[l], mscore[l], round_k)
        mkeep[l] = min_keep(mkeep[l], mscore[l], min_keep_m)
    for l in units:
        akeep[l] = min_keep(akeep[l], units[l].score, min_keep_m)

    out, after = [], 0
    for l, L in enumerate(layers):
        rows = None
        if l in units:
            heads, kv, rows = units[l].kept_heads(akeep[l])
        else:
            heads, kv = list(range(L.H)), list(range(L.Hkv))
        chans = [int(j) for j in np.nonzero(mkeep[l])[0]] if l in mkeep else list(range(L.F))
        after += L.attention_params(len(heads), len(kv), None if rows is None else len(rows)) + L.mlp_params(len(chans))
        out.append({"kept_heads": heads, "kept_kv_heads": kv, "kept_channels": chans})
        if attention_unit == "vo":
            out[-1]["kept_value_dims"] = rows if rows is not None else [
                r for k in kv for r in range(k * L.D, (k + 1) * L.D)]
    return out, (T - after) / T


FLAP, CFSP, TINY = ("smollm2_flap_scores.safetensors", "smollm2_cfsp_scores.safetensors",
                    "tiny_nonuniform_wanda_scores.safetensors")
CASES = {
    "smol_ulum_20_group": (FLAP, dict(structure="UL-UM", ratio=0.2, attention_unit="group")),
    "smol_ulum_50_head": (FLAP, dict(structure="UL-UM", ratio=0.5, attention_unit="head")),
    "smol_alam_20_group": (FLAP, dict(structure="AL-AM", ratio=0.2, attention_unit="group")),
    "smol_alam_50_head": (FLAP, dict(structure="AL-AM", ratio=0.5, attention_unit="head")),
    "smol_alam_30_mlp": (FLAP, dict(structure="AL-AM", ratio=0.3, attention_unit="group", prune="mlp")),
    "smol_almm_20_rh6": (FLAP, dict(structure="AL-MM", ratio=0.2, attention_unit="group", remove_heads=6)),
    "smol_ulmm_20_rh30_head": (FLAP, dict(structure="UL-MM", ratio=0.2, attention_unit="head", remove_heads=30)),
    "smol_alam_20_layers": (FLAP, dict(structure="AL-AM", ratio=0.2, attention_unit="group", layers="3-26")),
    "smol_ulum_20_round64": (FLAP, dict(structure="UL-UM", ratio=0.2, attention_unit="group", round=64)),
    "smol_alam_95": (FLAP, dict(structure="AL-AM", ratio=0.95, attention_unit="group")),
    "smol_alam_0": (FLAP, dict(structure="AL-AM", ratio=0.0, attention_unit="group")),
    "smol_cfsp_20": (CFSP, dict(blocks="angular", ratio=0.2, prune="mlp")),
    "smol_cfsp_20_round128": (CFSP, dict(blocks="angular", ratio=0.2, prune="mlp", round=128)),
    "smol_cfsp_50": (CFSP, dict(blocks="angular", ratio=0.5, prune="mlp")),
    "tiny_ulum_30_group": (TINY, dict(structure="UL-UM", ratio=0.3, attention_unit="group")),
    "tiny_alam_30_head": (TINY, dict(structure="AL-AM", ratio=0.3, attention_unit="head")),
    "tiny_alam_99": (TINY, dict(structure="AL-AM", ratio=0.99, attention_unit="group")),
    "smol_ulum_20_vo": (FLAP, dict(structure="UL-UM", ratio=0.2, attention_unit="vo")),
    "smol_ulum_50_vo": (FLAP, dict(structure="UL-UM", ratio=0.5, attention_unit="vo")),
    "smol_alam_30_vo": (FLAP, dict(structure="AL-AM", ratio=0.3, attention_unit="vo")),
    "tiny_ulum_60_vo": (TINY, dict(structure="UL-UM", ratio=0.6, attention_unit="vo")),
    "tiny_alam_90_vo": (TINY, dict(structure="AL-AM", ratio=0.9, attention_unit="vo")),
}


def full_args(a):
    out = {"ratio": a["ratio"], "attention_unit": a.get("attention_unit", "group"),
           "prune": a.get("prune", "attention,mlp"), "layers": a.get("layers"), "round": a.get("round"),
           "min_keep": a.get("min_keep", 1), "remove_heads": a.get("remove_heads", 0)}
    if "blocks" in a:
        out["blocks"] = a["blocks"]
        out["angular_a"] = a.get("angular_a", 1.0)
    else:
        out["structure"] = a["structure"]
    return out


def run_case(layers, args, **extra):
    return allocate(layers, args["ratio"], structure=args.get("structure"), blocks=args.get("blocks"),
                    attention_unit=args["attention_unit"], prune=args["prune"], layer_range=args["layers"],
                    round_k=args["round"], min_keep_m=args["min_keep"], remove_heads=args["remove_heads"],
                    angular_a=args.get("angular_a", 1.0), **extra)


def dump(obj, indent=0):
    """json with sorted keys, 2-space indentation, lists of numbers on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dump(obj[k], indent + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
            return "[" + ", ".join(json.dumps(v) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def main():
    cache, plans = {}, {}
    for name, (file, a) in CASES.items():
        if file not in cache:
            cache[file] = load_scores(file)
        layers = cache[file]
        args = full_args(a)
        diag = {}
        plan, achieved = run_case(layers, args, diag=diag)
        if diag:
            print(f"{name}: AL-AM k* {diag['kstar']}, with FLAP's truncated int64 weights "
                  f"{diag['kstar_flap_int_weights']} (same threshold: {diag['same_threshold']})", file=sys.stderr)
        if file == TINY and args.get("structure") == "UL-UM":  # ambiguity 5: literal reading agrees
            assert run_case(layers, args, literal_kinds=True)[0] == plan, name
            print(f"{name}: the literal reading of ambiguity 5 gives the same plan", file=sys.stderr)
        kept = sum(len(p["kept_channels"]) for p in plan)
        total_f = sum(L.F for L in layers)
        store_removed = total_f - kept < kept
        if store_removed:
            for p, L in zip(plan, layers):
                ks = set(p.pop("kept_channels"))
                p["removed_channels"] = [j for j in range(L.F) if j not in ks]
        plans[name] = {"scores": file, "args": args, "achieved": float(achieved), "layers": plan}
        nh = sum(len(p["kept_heads"]) for p in plan)
        nkv = sum(len(p["kept_kv_heads"]) for p in plan)
        print(f"{name:24s} achieved {achieved:.6f}  kept heads {nh}/{sum(L.H for L in layers)}"
              f"  kv {nkv}/{sum(L.Hkv for L in layers)}  channels {kept}/{total_f}"
              f"  ({'removed' if store_removed else 'kept'}_channels stored)", file=sys.stderr)
    text = dump(plans) + "\n"
    path = os.path.join(FIX, "plans.json")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({len(text.encode())} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
