"""The training methods sparsecell offers, by name: the few a user chooses from, the
research variants kept for the benchmark, and the default.

This module imports nothing: the config, the command line and the losses all read it.
Each name is a loss in :mod:`sparsecell.losses.methods`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LOSS", "CHOICES", "RESEARCH", "ROLES", "PU_LOSSES", "describe"]

#: sparsecell's default method: the one with the best mean validation F1, without an
#: oracle, over the 3-seed runs of random and salient clicks on CRCHisto and BCData
#: (docs/evidence.md, "Clicks as users make them"); ``pu`` before 2026-11-28.
DEFAULT_LOSS = "pu_sar"

#: The methods a user chooses from, each with when to pick it (README, "Choosing a method").
CHOICES: dict[str, str] = {
    "pu_sar": "the default: clicks as a pathologist makes them (the conspicuous cells first); "
              "needs a few completely annotated validation images",
    "pu": "clicks spread evenly over the cells (random, or every cell in chosen regions)",
    "ce": "ordinary training on the clicks: the baseline to beat, or complete annotations",
    "sel_sfl": "the paper's method (Xu et al., BIBM 2023), to reproduce it; it did not beat ce here",
}

#: Research variants, kept for the benchmark and for comparison; not recommended.
RESEARCH: dict[str, str] = {
    "const": "a constant weight on unlabelled pixels (the control for SEL)",
    "sel": "the semantic energy loss alone",
    "sel_pc": "SEL with one energy per class",
    "sel_sfl_pc": "SEL+SFL with one energy per class",
    "sel_pu": "pu with unlabelled pixels weighted by the semantic energy, plus SFL",
    "teacher": "background weighted by an EMA teacher's foreground",
    "pu_pseudo": "pu with progressive pseudo-labels",
}

#: Each loss's role in the evidence tables: a baseline, or one of ours (the paper's
#: method counts as ours: it is what this project implements).
ROLES: dict[str, str] = {
    "ce": "baseline", "const": "baseline", "pu": "baseline",
    "sel": "ours", "sel_sfl": "ours", "sel_pc": "ours", "sel_sfl_pc": "ours", "sel_pu": "ours",
    "teacher": "ours", "pu_pseudo": "ours", "pu_sar": "ours",
}  # fmt: skip

#: The losses built on the PU risk (they need the share of annotated cells or a prior).
PU_LOSSES = ("pu", "sel_pu", "pu_pseudo", "pu_sar")


def describe(name: str) -> str:
    """One line on a method: when to choose it, or that it is a research variant."""
    if name in CHOICES:
        return CHOICES[name]
    if name in RESEARCH:
        return f"research variant: {RESEARCH[name]}"
    raise KeyError(name)
