"""Training targets and losses of the detector: task-aligned assignment, BCE, CIoU and DFL.

Assignment (per image, for every ground-truth box g and anchor a):

* candidates: anchors whose centre lies inside g, with g widened to at least one stride of the anchor's
  level in each direction (so that a box thinner than a cell still owns the cell it sits in);
* alignment ``t(g, a) = s(a, class(g)) ** alpha * IoU(pred(a), g) ** beta`` (s = predicted class
  probability), zero outside the candidates;
* g takes its ``topk`` candidates with the largest t; an anchor taken by several boxes keeps the one its
  prediction overlaps most;
* the class target of a positive anchor is ``t`` rescaled per box so that its best anchor gets the box's
  best IoU (the score learns to predict the localisation quality); every other class target is 0.

Losses, each normalised by the sum of the class targets:

* class: binary cross-entropy with logits over every anchor and class;
* box: ``1 - CIoU(pred, g)`` over positive anchors, weighted by their class target;
* DFL: for each of the 4 distances (grid units, clipped to [0, reg_max - 1.01]) the cross-entropy of the
  bin distribution against the two bins around the target, weighted by their linear interpolation weights.
"""
import math

import torch
import torch.nn.functional as F

from .model import STRIDES


def box_iou(a, b, ciou=False, eps=1e-7):
    """IoU (or complete IoU) of boxes ``a`` and ``b`` [..., 4] (x1, y1, x2, y2), broadcast.

    CIoU = IoU - d^2 / c^2 - alpha * v, with d the distance between the centres, c the diagonal of the
    enclosing box, ``v = 4 / pi^2 * (atan(w_b / h_b) - atan(w_a / h_a))^2`` and
    ``alpha = v / (v - IoU + 1)``.
    """
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * \
            (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    wa, ha = ax2 - ax1, ay2 - ay1 + eps
    wb, hb = bx2 - bx1, by2 - by1 + eps
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw ** 2 + ch ** 2 + eps
    d2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (d2 / c2 + v * alpha)


def anchors_for(raw):
    """Anchor points (grid units) [A, 2] and strides [A, 1] for raw maps of any input size."""
    points, strides = [], []
    for r, s in zip(raw, STRIDES):
        h, w = r.shape[2:]
        y, x = torch.meshgrid(torch.arange(h, dtype=r.dtype, device=r.device) + 0.5,
                              torch.arange(w, dtype=r.dtype, device=r.device) + 0.5, indexing='ij')
        points.append(torch.stack([x.reshape(-1), y.reshape(-1)], 1))
        strides.append(torch.full((h * w, 1), float(s), dtype=r.dtype, device=r.device))
    return torch.cat(points), torch.cat(strides)


class TaskAlignedAssigner:
    """See the module docstring; ``__call__`` works on padded batches."""

    def __init__(self, topk=10, alpha=0.5, beta=6.0, eps=1e-9):
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, scores, pred_boxes, points_px, strides, gt_labels, gt_boxes, gt_mask):
        """scores [B, A, C] (probabilities), pred_boxes [B, A, 4] and gt_boxes [B, M, 4] (pixels, x1y1x2y2),
        points_px [A, 2] anchor centres in pixels, strides [A, 1], gt_labels [B, M] (long), gt_mask [B, M]
        (bool, False for padding) -> (target_boxes [B, A, 4], target_scores [B, A, C], fg [B, A])."""
        B, A, C = scores.shape
        M = gt_boxes.shape[1]
        if M == 0:
            return (torch.zeros_like(pred_boxes), torch.zeros_like(scores),
                    torch.zeros(B, A, dtype=torch.bool, device=scores.device))
        cx = (gt_boxes[..., 0] + gt_boxes[..., 2])[..., None] / 2           # [B, M, 1]
        cy = (gt_boxes[..., 1] + gt_boxes[..., 3])[..., None] / 2
        st = strides[:, 0][None, None]                                      # [1, 1, A]
        hw = torch.maximum((gt_boxes[..., 2] - gt_boxes[..., 0])[..., None] / 2, st / 2)
        hh = torch.maximum((gt_boxes[..., 3] - gt_boxes[..., 1])[..., None] / 2, st / 2)
        ax, ay = points_px[:, 0][None, None], points_px[:, 1][None, None]
        candidate = ((ax - cx).abs() < hw) & ((ay - cy).abs() < hh) & gt_mask[..., None]   # [B, M, A]
        iou = box_iou(gt_boxes[:, :, None], pred_boxes[:, None]).clamp(min=0) * candidate   # [B, M, A]
        cls = scores.transpose(1, 2).gather(1, gt_labels[..., None].expand(-1, -1, A))       # [B, M, A]
        align = cls.pow(self.alpha) * iou.pow(self.beta) * candidate
        k = min(self.topk, A)
        # Top-k of the alignment; a candidate with zero alignment can still be taken (early in training).
        rank = align + candidate * self.eps * 1e-3
        top = rank.topk(k, dim=-1).indices
        pos = torch.zeros_like(candidate).scatter_(-1, top, True) & candidate
        # An anchor claimed by several boxes keeps the box it overlaps most.
        multi = pos.sum(1, keepdim=True) > 1                                                  # [B, 1, A]
        if multi.any():
            best = (iou * pos + pos * self.eps).argmax(1, keepdim=True)                     # [B, 1, A]
            only_best = torch.zeros_like(pos).scatter_(1, best, True)
            pos = torch.where(multi, only_best & pos, pos)
        fg = pos.any(1)                                                                       # [B, A]
        gt_idx = pos.to(torch.uint8).argmax(1)                                                # [B, A]
        target_boxes = gt_boxes.gather(1, gt_idx[..., None].expand(-1, -1, 4))
        target_labels = gt_labels.gather(1, gt_idx)
        align = align * pos
        best_align = align.amax(-1, keepdim=True)
        best_iou = (iou * pos).amax(-1, keepdim=True)
        quality = (align * best_iou / (best_align + self.eps)).amax(1)                       # [B, A]
        target_scores = F.one_hot(target_labels, C).to(scores.dtype) * (quality * fg)[..., None]
        return target_boxes, target_scores, fg


class DetectionLoss:
    """Total loss ``box_gain * box + cls_gain * cls + dfl_gain * dfl`` of raw head outputs against padded
    ground truth; returns (total, tensor of the three parts, detached)."""

    def __init__(self, num_classes, reg_max=16, box_gain=7.5, cls_gain=0.5, dfl_gain=1.5, topk=10):
        self.nc, self.reg_max = num_classes, reg_max
        self.gains = (box_gain, cls_gain, dfl_gain)
        self.assigner = TaskAlignedAssigner(topk=topk)

    def __call__(self, raw, gt_labels, gt_boxes, gt_mask):
        B = raw[0].shape[0]
        R = self.reg_max
        x = torch.cat([r.flatten(2) for r in raw], 2).transpose(1, 2)                         # [B, A, 4R + C]
        dist_logits = x[..., :4 * R].reshape(B, -1, 4, R)
        cls_logits = x[..., 4 * R:]
        points, strides = anchors_for(raw)
        bins = torch.arange(R, dtype=x.dtype, device=x.device)
        dist = dist_logits.softmax(-1) @ bins                                                 # [B, A, 4]
        pred_grid = torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)
        pred_px = pred_grid * strides
        target_boxes, target_scores, fg = self.assigner(
            cls_logits.detach().sigmoid(), pred_px.detach(), points * strides, strides, gt_labels, gt_boxes, gt_mask)
        norm = target_scores.sum().clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, target_scores, reduction='sum') / norm
        if fg.any():
            weight = target_scores.sum(-1)[fg]
            ciou = box_iou(pred_px[fg], target_boxes[fg], ciou=True)
            loss_box = ((1.0 - ciou) * weight).sum() / norm
            st = strides.expand(B, -1, -1)[fg]                                                # [P, 1]
            pt = points.expand(B, -1, -1)[fg]
            tb = target_boxes[fg] / st
            ltrb = torch.cat([pt - tb[:, :2], tb[:, 2:] - pt], -1).clamp(0, R - 1.01)        # [P, 4]
            left = ltrb.floor().long()
            w_right = ltrb - left
            logp = dist_logits[fg].log_softmax(-1)                                            # [P, 4, R]
            ce = -(logp.gather(-1, left[..., None])[..., 0] * (1 - w_right)
                   + logp.gather(-1, (left + 1)[..., None])[..., 0] * w_right)
            loss_dfl = (ce.mean(-1) * weight).sum() / norm
        else:
            loss_box = loss_dfl = x.sum() * 0.0
        parts = torch.stack([loss_box, loss_cls, loss_dfl]).detach()
        g = self.gains
        return g[0] * loss_box + g[1] * loss_cls + g[2] * loss_dfl, parts
