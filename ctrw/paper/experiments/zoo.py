"""The zoo: every registered defense (``ctrw.catalog.DEFENSES``) on one data set and network,
trained and evaluated by the same jobs, under both protocols: the headline comparison of
randomized defenses (RobustBench leaves them out; here they sit side by side).

Each defense is a training sub-job (the shared one where another suite trains it too) and an
attack sub-job ``+zoo`` that runs natural and PGD-20 under both protocols and EOT-PGD under the
adaptive one, with the gradient-masking diagnostics on, so the table shows, per defense, what the
paper protocol reports, what an adaptive attacker gets, and the gap between them.

The smoke version has a recipe of its own (``SMOKE_RECIPE``): its point is to show a gap where
one exists, so it must train models that are robust at the budget it attacks and measure them
tightly enough for a gap to beat the intervals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctrw.catalog import DEFENSES
from ctrw.paper.common import MODEL_LABELS, attack
from ctrw.paper.registry import Built, Experiment
from ctrw.render import Cell, Column, Row, Table

if TYPE_CHECKING:
    from ctrw.paper.assembly import Results
    from ctrw.paper.keys import SubJobKey
    from ctrw.paper.planner import Planner
    from ctrw.paper.request import SuiteRequest

COLUMNS = (
    Column(key="natural", label="Natural", paper=False, protocol="paper"),
    Column(key="pgd20_paper", label="PGD-20 (paper protocol)", paper=False, protocol="paper"),
    Column(key="pgd20_adaptive", label="PGD-20 (adaptive)", paper=False, protocol="adaptive"),
    Column(key="eotpgd", label="EOT-PGD (adaptive)", paper=False, protocol="adaptive"),
    Column(key="gap", label="gap: paper - worst adaptive (points)", kind="number", paper=False),
)
# The smoke version's budget: digits' pixels take 17 grey levels, so 8/255 (half a level) barely
# moves an image; 0.1 with steps of 0.025.
SMOKE_BUDGET = {"eps": 0.1, "step_size": 0.025}
# The smoke version's recipe, over the other suites' (``ctrw.paper.planner.SMOKE_TRAIN``: 500 images,
# 6 epochs of PGD-1 at 8/255, 64 test images in batches of 64). Measured on one CPU thread
# (2026-12-01): with that recipe no defense's gap beat its interval (64 images in one batch: one
# cluster); with this one additive_noise shows 78% (paper) against 69% (EOT-PGD), "overestimated by 9
# points". Why each entry:
# - all of digits (1437 training, 360 test images) and evaluation batches of 16: the batch interval
#   has 23 clusters instead of 1, so a 9-point gap can be told from chance;
# - ten epochs of PGD-3 adversarial training at the table's budget (eps 0.1): trained at 8/255 and
#   attacked at 0.1, every model is broken alike and there is no robustness for a protocol to
#   overestimate;
# - resize_pad randomizes in training too: with the paper's inference-only recipe the 8-pixel
#   network sees a 1-pixel mean-grey border on a black background for the first time at test time
#   and stays near chance (10-18% clean);
# - rna pools BatchNorm with GroupNorms of 4 channels (published: 1): the last stage of a network on
#   8 x 8 images is 1 x 1, where a one-channel GroupNorm outputs a constant.
SMOKE_RECIPE: dict[str, Any] = {
    "data": {"train_subset": None, "test_subset": None},
    "optim": {"epochs": 10, "milestones": [8]},
    "attack": {"eps": SMOKE_BUDGET["eps"], "step_size": 0.05, "steps": 3},
    "evaluation": {"batch_size": 16},
    "defense": {"resize_pad": {"in_training": True}, "rna": {"group_sizes": [4]}},
}
# ... and its attacks: PGD-10 (it reaches the budget's edge in 4 steps) and EOT-PGD-10 over 8 draws.
SMOKE_STEPS = {"pgd20": {"steps": 10}, "eotpgd": {"steps": 10, "eot_draws": 8}}
# Where each column's number is read: (paper column, protocol).
_SOURCES = {
    "natural": ("natural", "paper"),
    "pgd20_paper": ("pgd20", "paper"),
    "pgd20_adaptive": ("pgd20", "adaptive"),
    "eotpgd": ("eotpgd", "adaptive"),
}


def defenses() -> tuple[str, ...]:
    """The catalog's defenses, in its order."""
    return tuple(DEFENSES)


def _key(req: SuiteRequest, model: str, variant: str) -> SubJobKey:
    # fixed_sigma is the one variant with a setting of its own (Table 7): midway between A and B.
    at = "mid" if variant == "fixed_sigma" else None
    return req.sub_job_key(model, variant=variant, fixed_sigma_at=at).evaluated("zoo")


def column_settings(req: SuiteRequest, column: str) -> dict[str, Any]:
    """The attack settings of a column beyond ``ctrw.paper.common.attack``'s (the smoke budget and steps)."""
    if not req.smoke or column == "natural":
        return {}
    return {**SMOKE_BUDGET, **SMOKE_STEPS.get(column, {})}


def plan(p: Planner, model: str) -> None:
    for variant in defenses():
        key = _key(p.req, model, variant)
        # The smoke version's models are its own (its recipe): their training jobs measure clean
        # accuracy only, the attack sub-job does the rest. At full scale they keep the default
        # columns, so a model another suite trains too (same config) is trained once.
        p.train(key.train, [attack(p.req, "natural")] if p.req.smoke else None)
        attacks = [attack(p.req, c, **column_settings(p.req, c)) for c in ("natural", "pgd20", "eotpgd")]
        p.attack(key, attacks, protocol="both", diagnostics=True)


def build(req: SuiteRequest, res: Results) -> Built:
    rows, figures = [], {}
    for model in req.models:
        names: list[str] = []
        series: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        low: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        high: dict[str, list[float | None]] = {"paper": [], "adaptive": []}
        overestimated: list[bool] = []  # the attack sub-job's protocol_gap fired
        for variant in defenses():
            key = _key(req, model, variant)
            info = DEFENSES[variant]
            cells = {
                c: res.accuracy(key, col, protocol=proto, **column_settings(req, col))
                for c, (col, proto) in _SOURCES.items()
            }
            adaptive = [cells[c].ours for c in ("pgd20_adaptive", "eotpgd") if cells[c].ours is not None]
            paper = cells["pgd20_paper"].ours
            gap = None if paper is None or not adaptive else round(paper - min(adaptive), 2)
            cells["gap"] = Cell(ours=gap)
            labels = {
                "model": MODEL_LABELS.get(model, model),
                "defense": variant,
                "randomized": "yes" if info.randomized else "no",
                "source": info.source,
            }
            rows.append(Row(labels=labels, sub_jobs=[str(key.train), str(key)], cells=cells))
            # The figure: the paper protocol's PGD-20 beside the worst adaptive attack.
            worst = min((cells[c] for c in ("pgd20_adaptive", "eotpgd") if cells[c].ours is not None),
                        key=lambda c: c.ours or 0.0, default=Cell())  # fmt: skip
            names.append(variant)
            overestimated.append(
                any(d.get("name") == "protocol_gap" and d.get("fired") for d in res.diagnostics(key))
            )
            for side, cell in (("paper", cells["pgd20_paper"]), ("adaptive", worst)):
                series[side].append(cell.ours)
                low[side].append(cell.ci_low)
                high[side].append(cell.ci_high)
        figures[f"zoo_{model}" if len(req.models) > 1 else "zoo"] = {
            "kind": "zoo",
            "model": MODEL_LABELS.get(model, model),
            "defenses": names,
            "series": series,
            "ci_low": low,
            "ci_high": high,
            "overestimated": overestimated,
            "paper_attack": f"PGD-{column_settings(req, 'pgd20').get('steps', 20)}",
        }
    table = Table(
        name="zoo",
        title="The zoo: robust accuracy (%) of every registered defense, paper vs adaptive protocol",
        row_keys=["model", "defense", "randomized", "source"],
        columns=[c.model_copy() for c in COLUMNS],
        rows=rows,
        notes=[
            "gap: the paper protocol's PGD-20 minus the lowest adaptive accuracy (PGD-20 or "
            "EOT-PGD); a large gap means the paper protocol overestimates the defense.",
            "fixed_sigma runs at sigma midway between the bounds (Table 7's 'mid').",
            *(
                [
                    f"Smoke version: L-inf budget {SMOKE_BUDGET['eps']} (step {SMOKE_BUDGET['step_size']}) "
                    "on digits, where 8/255 is half a grey level; PGD-10 in the PGD-20 columns, "
                    "EOT-PGD-10 over 8 draws.",
                    "Smoke version: every model adversarially trained at that budget (PGD-3, "
                    f"{req.epochs or SMOKE_RECIPE['optim']['epochs']} epochs); resize_pad randomizes "
                    "in training too (inference only, the paper's "
                    "recipe, leaves the 8-pixel network near chance) and rna pools GroupNorms of 4 "
                    "channels (a one-channel GroupNorm is constant on the 1 x 1 maps of the last stage).",
                ]
                if req.smoke
                else []
            ),  # fmt: skip
        ],
    )
    return {"zoo": table}, figures


EXPERIMENT = Experiment(name="zoo", plan=plan, build=build, smoke_recipe=SMOKE_RECIPE)
