"""APGD with its EOT draws batched (AutoAttack 'rand', ``ctrw.attacks.builders.build_autoattack_rand``).

torchattacks' ``APGD`` averages the gradient over ``eot_iter`` draws one forward and backward at a
time: 20 small sequential passes per step at the 'rand' defaults. ``BatchedEOTAPGD`` stacks the
draws as copies of the batch in one forward (``ctrw.nn.random_weight.eot_groups``: copy j gets
its own draw, the same draw torchattacks' j-th sequential forward gets) and at most
``max_rows`` rows per forward, summing the chunks' gradients, exactly as our EOT-PGD does.

Everything else is torchattacks 3.5.1's ``APGD.attack_single_run`` (MIT licence, Harry Kim;
after Croce & Hein's reference code) verbatim, apart from the two EOT loops replaced by
``_eot_grad`` and the verbose prints dropped; its step-size schedule, momentum and best-point
bookkeeping are kept as they are, with the last draw's logits and losses feeding them as in
torchattacks. tests/ctrw/attacks/test_apgd.py checks the result against ``torchattacks.APGD`` on
the same draws. This file is long because the copied function is (about 170 lines).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torchattacks
from torch import nn

from ctrw.nn.randomness import eot_groups

__all__ = ["BatchedEOTAPGD"]


class BatchedEOTAPGD(torchattacks.APGD):
    """``torchattacks.APGD`` whose EOT draws go through one stacked forward (chunked by rows).

    Args:
        model: classifier on images in [0, 1] whose random layers are in 'per_forward' mode
            (the draws then differ) and support stacked copies (``grouped_draws_supported``).
        max_rows: at most this many rows (copies x batch) per forward; at least one copy.
        **kwargs: ``torchattacks.APGD``'s arguments (norm, eps, steps, n_restarts, seed, loss,
            eot_iter, rho).
    """

    def __init__(self, model: nn.Module, *, max_rows: int = 1024, **kwargs: object) -> None:
        super().__init__(model, **kwargs)  # type: ignore[arg-type]
        self.max_rows = max_rows

    def _eot_grad(
        self, x_adv: torch.Tensor, y: torch.Tensor, criterion_indiv: Callable[..., torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gradient averaged over ``eot_iter`` draws, and the LAST draw's logits and per-example
        losses (torchattacks' loop leaves those of its last iteration for the bookkeeping)."""
        draws = self.eot_iter
        chunk = max(1, min(draws, self.max_rows // max(1, x_adv.shape[0])))
        grad = torch.zeros_like(x_adv)
        b = x_adv.shape[0]
        for start in range(0, draws, chunk):
            k = min(chunk, draws - start)
            with torch.enable_grad():
                inp = x_adv.repeat(k, 1, 1, 1) if k > 1 else x_adv  # (k*B, C, H, W)
                with eot_groups(self.model, k):
                    logits_all = self.get_logits(inp)  # (k*B, K)
                loss_all = criterion_indiv(logits_all, y.repeat(k) if k > 1 else y)  # (k*B,)
            grad += torch.autograd.grad(loss_all.sum(), [x_adv])[0].detach()
        grad /= float(draws)
        return grad, logits_all[-b:], loss_all[-b:]

    def attack_single_run(self, x_in, y_in):
        x = x_in.clone() if len(x_in.shape) == 4 else x_in.clone().unsqueeze(0)
        y = y_in.clone() if len(y_in.shape) == 1 else y_in.clone().unsqueeze(0)

        self.steps_2, self.steps_min, self.size_decr = (
            max(int(0.22 * self.steps), 1),
            max(int(0.06 * self.steps), 1),
            max(int(0.03 * self.steps), 1),
        )

        if self.norm == "Linf":
            t = 2 * torch.rand(x.shape).to(self.device).detach() - 1
            x_adv = x.detach() + self.eps * torch.ones([x.shape[0], 1, 1, 1]).to(self.device).detach() * t / (
                t.reshape([t.shape[0], -1]).abs().max(dim=1, keepdim=True)[0].reshape([-1, 1, 1, 1])
            )  # nopep8
        elif self.norm == "L2":
            t = torch.randn(x.shape).to(self.device).detach()
            x_adv = x.detach() + self.eps * torch.ones([x.shape[0], 1, 1, 1]).to(self.device).detach() * t / (
                (t**2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12
            )  # nopep8
        x_adv = x_adv.clamp(0.0, 1.0)
        x_best = x_adv.clone()
        x_best_adv = x_adv.clone()
        loss_steps = torch.zeros([self.steps, x.shape[0]])
        loss_best_steps = torch.zeros([self.steps + 1, x.shape[0]])
        acc_steps = torch.zeros_like(loss_best_steps)

        if self.loss == "ce":
            criterion_indiv = nn.CrossEntropyLoss(reduction="none")
        elif self.loss == "dlr":
            criterion_indiv = self.dlr_loss
        else:
            raise ValueError("unknown loss")

        x_adv.requires_grad_()
        grad, logits, loss_indiv = self._eot_grad(x_adv, y, criterion_indiv)  # batched EOT (ctrw)
        grad_best = grad.clone()

        acc = logits.detach().max(1)[1] == y
        acc_steps[0] = acc + 0
        loss_best = loss_indiv.detach().clone()

        step_size = (
            self.eps
            * torch.ones([x.shape[0], 1, 1, 1]).to(self.device).detach()
            * torch.Tensor([2.0]).to(self.device).detach().reshape([1, 1, 1, 1])
        )  # nopep8
        x_adv_old = x_adv.clone()
        k = self.steps_2 + 0
        u = np.arange(x.shape[0])
        counter3 = 0

        loss_best_last_check = loss_best.clone()
        reduced_last_check = np.zeros(loss_best.shape) == np.zeros(loss_best.shape)

        # n_reduced = 0
        for i in range(self.steps):
            # gradient step
            with torch.no_grad():
                x_adv = x_adv.detach()
                grad2 = x_adv - x_adv_old
                x_adv_old = x_adv.clone()

                a = 0.75 if i > 0 else 1.0

                if self.norm == "Linf":
                    x_adv_1 = x_adv + step_size * torch.sign(grad)
                    x_adv_1 = torch.clamp(
                        torch.min(torch.max(x_adv_1, x - self.eps), x + self.eps),
                        0.0,
                        1.0,
                    )
                    x_adv_1 = torch.clamp(
                        torch.min(
                            torch.max(
                                x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a),
                                x - self.eps,
                            ),
                            x + self.eps,
                        ),
                        0.0,
                        1.0,
                    )

                elif self.norm == "L2":
                    x_adv_1 = x_adv + step_size * grad / (
                        (grad**2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12
                    )  # nopep8
                    x_adv_1 = torch.clamp(
                        x
                        + (x_adv_1 - x)
                        / (((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
                        * torch.min(
                            self.eps * torch.ones(x.shape).to(self.device).detach(),
                            ((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt(),
                        ),
                        0.0,
                        1.0,
                    )  # nopep8
                    x_adv_1 = x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a)
                    x_adv_1 = torch.clamp(
                        x
                        + (x_adv_1 - x)
                        / (((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
                        * torch.min(
                            self.eps * torch.ones(x.shape).to(self.device).detach(),
                            ((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12,
                        ),
                        0.0,
                        1.0,
                    )  # nopep8

                x_adv = x_adv_1 + 0.0

            # get gradient
            x_adv.requires_grad_()
            grad, logits, loss_indiv = self._eot_grad(x_adv, y, criterion_indiv)  # batched EOT (ctrw)

            pred = logits.detach().max(1)[1] == y
            acc = torch.min(acc, pred)
            acc_steps[i + 1] = acc + 0
            x_best_adv[(pred == 0).nonzero().squeeze()] = (
                x_adv[(pred == 0).nonzero().squeeze()] + 0.0
            )  # nopep8

            # check step size
            with torch.no_grad():
                y1 = loss_indiv.detach().clone()
                loss_steps[i] = y1.cpu() + 0
                ind = (y1 > loss_best).nonzero().squeeze()
                x_best[ind] = x_adv[ind].clone()
                grad_best[ind] = grad[ind].clone()
                loss_best[ind] = y1[ind] + 0
                loss_best_steps[i + 1] = loss_best + 0

                counter3 += 1

                if counter3 == k:
                    fl_oscillation = self.check_oscillation(
                        loss_steps.detach().cpu().numpy(),
                        i,
                        k,
                        loss_best.detach().cpu().numpy(),
                        k3=self.thr_decr,
                    )
                    fl_reduce_no_impr = (~reduced_last_check) * (
                        loss_best_last_check.cpu().numpy() >= loss_best.cpu().numpy()
                    )  # nopep8
                    fl_oscillation = ~(~fl_oscillation * ~fl_reduce_no_impr)
                    reduced_last_check = np.copy(fl_oscillation)
                    loss_best_last_check = loss_best.clone()

                    if np.sum(fl_oscillation) > 0:
                        step_size[u[fl_oscillation]] /= 2.0

                        fl_oscillation = np.where(fl_oscillation)

                        x_adv[fl_oscillation] = x_best[fl_oscillation].clone()
                        grad[fl_oscillation] = grad_best[fl_oscillation].clone()

                    counter3 = 0
                    k = np.maximum(k - self.size_decr, self.steps_min)

        return x_best, acc, loss_best, x_best_adv
